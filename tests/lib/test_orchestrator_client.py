"""OrchestratorClient against the real orchestrator process, and against servers that misbehave.

One orchestrator (its own SQLite files, no MQTT) serves the module with the `noop`
drill template: steps that only wait, with an approval gate and a failing step on
request. Each test makes the runs it asserts on; a few share a template filter of
their own through `steps`, so the lists they read hold only their runs.
"""

from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import aiohttp
from aiohttp import web
import pytest

from kittyai.catalog import ServiceName
from kittyai.client import KittyAuthError, KittyConnectionError, KittyResponseError
from kittyai.contract.orchestrator import (
    ApprovalRequest,
    ArtifactKind,
    CancelRequest,
    CreateRunRequest,
    Decision,
    RetryRequest,
    RunState,
    StepState,
)
from kittyai.orchestrator_client import OrchestratorClient, OrchestratorRequestError
from tests.helpers.loopback_server import RouteServer
from tests.helpers.net import free_port, loopback_sockets
from tests.helpers.orchestrator import (
    ORCHESTRATOR_SERVICE_OPTIONS,
    READ_ONLY_TOKEN,
    noop_run,
    wait_for_run,
)
from tests.helpers.services import ServiceProcess

TOKEN = "orchestrator-client-token-0123456789"


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The real orchestrator, without MQTT, with a token that may only read."""
    with loopback_sockets():
        process = ServiceProcess(
            ServiceName.ORCHESTRATOR,
            tmp_path_factory.mktemp("orchestrator"),
            mqtt_port=None,
            token=TOKEN,
            extra_options=ORCHESTRATOR_SERVICE_OPTIONS,
        )
        process.start(timeout=60)
    yield process
    process.stop()


@pytest.fixture
def client(orchestrator: ServiceProcess, session: aiohttp.ClientSession) -> OrchestratorClient:
    return OrchestratorClient(session, orchestrator.url, TOKEN)


async def test_approve_a_waiting_run(client: OrchestratorClient) -> None:
    """A run waits at its gate; the approval is recorded and the run succeeds."""
    created = await client.create_run(noop_run(steps=2, approval=True, requested_by="Ada"))

    assert created.id.startswith("r-")
    assert (created.template, created.requested_by) == ("noop", "Ada")
    assert [step.name for step in created.steps] == ["step-1", "step-2"]
    waiting = await wait_for_run(client, created.id, RunState.AWAITING_APPROVAL)
    assert waiting.awaiting_step == 0
    assert waiting.steps[0].state is StepState.AWAITING_APPROVAL
    assert waiting.steps[0].approval is not None

    decided = await client.decide(
        created.id,
        ApprovalRequest(decision=Decision.APPROVE, approver="Ada", reason="Drill, go on"),
    )

    assert decided.id == created.id
    [approval] = decided.approvals
    assert (approval.step, approval.decision) == (0, Decision.APPROVE)
    assert (approval.approver, approval.reason) == ("Ada", "Drill, go on")
    done = await wait_for_run(client, created.id, RunState.SUCCEEDED)
    assert [step.state for step in done.steps] == [StepState.SUCCEEDED] * 2
    assert done.finished_at is not None
    assert await client.run(created.id) == done


async def test_reject_rolls_back(client: OrchestratorClient) -> None:
    """A rejection ends the run rolled back, with the rollback log among its artifacts."""
    run = await client.create_run(noop_run(steps=2, approval=True))
    await wait_for_run(client, run.id, RunState.AWAITING_APPROVAL)

    await client.decide(
        run.id, ApprovalRequest(decision=Decision.REJECT, approver="Ada", reason="Not now")
    )

    ended = await wait_for_run(client, run.id, RunState.ROLLED_BACK)
    assert ended.approvals[0].decision is Decision.REJECT
    assert StepState.SUCCEEDED not in [step.state for step in ended.steps]
    artifacts = await client.artifacts(run.id)
    assert ArtifactKind.ROLLBACK_LOG in [artifact.kind for artifact in artifacts]
    assert all(artifact.run_id == run.id for artifact in artifacts)


async def test_same_idempotency_key_same_run(client: OrchestratorClient) -> None:
    """Asking again with the key returns the run made first, whatever the parameters."""
    key = f"drill-{uuid4().hex}"
    first = await client.create_run(noop_run(steps=1, idempotency_key=key))
    again = await client.create_run(noop_run(steps=3, idempotency_key=key))

    assert again.id == first.id
    assert len(again.steps) == 1
    assert again.idempotency_key == key


async def test_list_filters_and_pages(client: OrchestratorClient) -> None:
    """Runs are listed newest first, by state, by template, a page at a time."""
    runs = [await client.create_run(noop_run(steps=1, approval=True)) for _ in range(3)]
    for run in runs:
        await wait_for_run(client, run.id, RunState.AWAITING_APPROVAL)

    waiting = await client.runs(states=[RunState.AWAITING_APPROVAL], template="noop")
    first_page = await client.runs(states=[RunState.AWAITING_APPROVAL], limit=2)
    second_page = await client.runs(
        states=[RunState.AWAITING_APPROVAL], offset=first_page.next_offset, limit=2
    )

    mine = [run.id for run in runs]
    listed = [run.id for run in waiting.runs]
    # Newest first: the last made comes first.
    assert [run_id for run_id in listed if run_id in mine] == mine[::-1]
    assert all(run.state is RunState.AWAITING_APPROVAL for run in waiting.runs)
    assert waiting.total >= 3
    assert len(first_page.runs) == 2
    assert first_page.next_offset == 2
    assert not {run.id for run in first_page.runs} & {run.id for run in second_page.runs}
    assert (await client.runs(template="no-such-template")).runs == []
    stats = await client.stats()
    assert stats.active >= 3
    assert set(mine) <= {awaiting.run_id for awaiting in stats.awaiting_approval}
    for run in runs:
        await client.cancel(run.id, CancelRequest(reason="Drill over"))


async def test_cancel_then_retry(client: OrchestratorClient) -> None:
    """A cancelled run can be retried under the same id; cancelling it twice is refused."""
    run = await client.create_run(noop_run(steps=2, approval=True))
    await wait_for_run(client, run.id, RunState.AWAITING_APPROVAL)

    await client.cancel(run.id, CancelRequest(reason="Wrong drill"))
    cancelled = await wait_for_run(client, run.id, RunState.CANCELLED)
    with pytest.raises(OrchestratorRequestError) as refused:
        await client.cancel(run.id, CancelRequest())
    assert (refused.value.status, refused.value.code) == (409, "already_finished")

    retried = await client.retry(run.id, RetryRequest(from_step="step-1"))

    assert retried.id == run.id
    assert retried.state in (RunState.QUEUED, RunState.RUNNING, RunState.AWAITING_APPROVAL)
    assert cancelled.state is RunState.CANCELLED
    await wait_for_run(client, run.id, RunState.AWAITING_APPROVAL)
    await client.cancel(run.id, CancelRequest())


async def test_failed_step_rolls_back(client: OrchestratorClient) -> None:
    """A step that fails undoes the steps before it; retrying from the failed one is allowed."""
    run = await client.create_run(noop_run(steps=3, fail_at=2))

    ended = await wait_for_run(client, run.id, RunState.ROLLED_BACK)

    assert [step.state for step in ended.steps] == [
        StepState.COMPENSATED,
        StepState.FAILED,
        StepState.SKIPPED,
    ]
    with pytest.raises(OrchestratorRequestError) as refused:
        await client.retry(run.id, RetryRequest(from_step=1))
    # The first step was undone: the retry must start with it.
    assert (refused.value.status, refused.value.code) == (409, "cannot_retry")
    assert "step-1" in refused.value.message


@pytest.mark.parametrize(
    ("request_body", "status", "code", "named"),
    [
        ({"template": "no-such-template"}, 422, "unknown_template", "no-such-template"),
        ({"template": "noop", "params": {"steps": 0}}, 422, "invalid_params", "steps"),
        ({"template": "noop", "params": {"choices": ["a"]}}, 422, "invalid_params", "choices"),
    ],
)
async def test_refused_runs(
    client: OrchestratorClient, request_body: dict[str, object], status: int, code: str, named: str
) -> None:
    """A run the orchestrator cannot make is refused with its code and what is wrong."""
    total = (await client.runs(limit=1)).total
    with pytest.raises(OrchestratorRequestError) as refused:
        await client.create_run(CreateRunRequest.model_validate(request_body))
    assert (refused.value.status, refused.value.code) == (status, code)
    assert named in refused.value.message
    # Nothing was stored.
    assert (await client.runs(limit=1)).total == total


async def test_refused_decisions(client: OrchestratorClient) -> None:
    """Deciding at no gate, picking no offered choice or naming no run is refused."""
    done = await client.create_run(noop_run(steps=1))
    await wait_for_run(client, done.id, RunState.SUCCEEDED)
    choosing = await client.create_run(noop_run(steps=1, approval=True, choices=["v1", "v2"]))
    await wait_for_run(client, choosing.id, RunState.AWAITING_APPROVAL)
    approve = ApprovalRequest(decision=Decision.APPROVE, approver="Ada")

    for run_id, request, status, code in (
        (done.id, approve, 409, "not_awaiting_approval"),
        (choosing.id, approve, 422, "invalid_choice"),
        (choosing.id, approve.model_copy(update={"choice": "v3"}), 422, "invalid_choice"),
        ("r-000000000000", approve, 404, "run_not_found"),
    ):
        with pytest.raises(OrchestratorRequestError) as refused:
            await client.decide(run_id, request)
        assert (refused.value.status, refused.value.code) == (status, code), run_id
    with pytest.raises(OrchestratorRequestError) as refused:
        await client.run("r-000000000000")
    assert refused.value.code == "run_not_found"

    picked = await client.decide(choosing.id, approve.model_copy(update={"choice": "v2"}))
    assert picked.approvals[0].choice == "v2"
    await wait_for_run(client, choosing.id, RunState.SUCCEEDED)


async def test_nodes_without_workers(client: OrchestratorClient) -> None:
    """An orchestrator no worker registered with has no nodes."""
    assert await client.nodes() == []


async def test_wrong_token_scope_and_no_service(
    orchestrator: ServiceProcess, client: OrchestratorClient, session: aiohttp.ClientSession
) -> None:
    """A wrong token fails auth, a missing scope is refused, a closed port fails to connect."""
    with pytest.raises(KittyAuthError) as rejected:
        await OrchestratorClient(session, orchestrator.url, "wrong-token").stats()
    assert "wrong-token" not in str(rejected.value)

    reader = OrchestratorClient(session, orchestrator.url, READ_ONLY_TOKEN)
    run = await client.create_run(noop_run(steps=1, approval=True))
    await wait_for_run(reader, run.id, RunState.AWAITING_APPROVAL)
    with pytest.raises(OrchestratorRequestError) as refused:
        await reader.decide(run.id, ApprovalRequest(decision=Decision.APPROVE, approver="Eve"))
    assert (refused.value.status, refused.value.code) == (403, "missing_scope")
    assert "runs:approve" in refused.value.message
    assert (await client.run(run.id)).approvals == []
    await client.cancel(run.id, CancelRequest())

    closed = OrchestratorClient(session, f"http://127.0.0.1:{free_port()}", TOKEN)
    with pytest.raises(KittyConnectionError):
        await closed.runs()


@pytest.fixture
async def not_orchestrator_url() -> AsyncIterator[str]:
    """Serve the run routes on 127.0.0.1 with bodies that are not the orchestrator's."""

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"active": "many"})

    async def refused(_: web.Request) -> web.Response:
        return web.Response(status=409, text="<html>no</html>", content_type="text/html")

    async with RouteServer({"/api/stats": stats, "/api/runs/r-1": refused}) as server:
        yield server.url


async def test_answers_that_break_the_api(
    not_orchestrator_url: str, session: aiohttp.ClientSession
) -> None:
    """A body that is not the API's, or a refusal without its error body, is a response error."""
    client = OrchestratorClient(session, not_orchestrator_url, TOKEN)
    with pytest.raises(KittyResponseError, match="run statistics that is not valid"):
        await client.stats()
    with pytest.raises(KittyResponseError, match="answered HTTP 409"):
        await client.run("r-1")
