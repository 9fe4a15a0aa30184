"""The orchestrator's HTTP API as clients meet it: a real process, real SQLite, real tokens.

One orchestrator process is shared by the module, so its tests run on one event loop
of the module's. Each test makes its own runs and looks only at those, or at what
stays the same across a request that must change nothing.
"""

from collections.abc import Iterator
import hashlib
from http import HTTPStatus
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
import pytest

from kittyai.contract.orchestrator import (
    ArtifactKind,
    ArtifactList,
    NodeList,
    RunInfo,
    RunList,
    RunState,
    RunStats,
    StepState,
)
from tests.helpers.services import Answer, ServiceProcess
from tests.lib.orchestrator.process import OrchestratorApi, scoped_token, start_orchestrator

pytestmark = pytest.mark.asyncio(loop_scope="module")

READER_TOKEN = "reader-token-0123456789"
REQUESTER_TOKEN = "requester-token-0123456789"
APPROVER_TOKEN = "approver-token-0123456789"
BURSTER_TOKEN = "burster-token-0123456789"
WRITE_BURST = 100
# Every route the orchestrator serves, by method and path.
ROUTES = {
    ("post", "/api/runs"): "runs:write",
    ("get", "/api/runs"): "runs:read",
    ("get", "/api/runs/{run_id}"): "runs:read",
    ("get", "/api/runs/{run_id}/artifacts"): "runs:read",
    ("get", "/api/runs/{run_id}/artifacts/{artifact_id}"): "runs:read",
    ("post", "/api/runs/{run_id}/approvals"): "runs:approve",
    ("post", "/api/runs/{run_id}/retry"): "runs:write",
    ("post", "/api/runs/{run_id}/cancel"): "runs:write",
    ("get", "/api/runs/{run_id}/events"): "runs:read",
    ("get", "/api/events"): "runs:read",
    ("get", "/api/nodes"): "runs:read",
    ("get", "/api/templates"): "runs:read",
    ("get", "/api/stats"): "runs:read",
}


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = start_orchestrator(
        tmp_path_factory.mktemp("orchestrator"),
        scoped_tokens=[
            scoped_token("reader", READER_TOKEN, "runs:read"),
            scoped_token("requester", REQUESTER_TOKEN, "runs:write", "runs:read"),
            scoped_token("approver", APPROVER_TOKEN, "runs:approve", "runs:read"),
            scoped_token("burster", BURSTER_TOKEN, "runs:write"),
        ],
        writes_per_minute=60,
        write_burst=WRITE_BURST,
    )
    yield process
    process.stop()


def run_of(answer: Answer, status: int = HTTPStatus.OK) -> RunInfo:
    assert answer.status == status, answer.body
    return RunInfo.model_validate(answer.body)


def assert_error(answer: Answer, status: int, code: str) -> None:
    """Assert KITTY's JSON error body: the code, a message for humans, the correlation id."""
    assert answer.status == status, answer.body
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.body["error"]["code"] == code
    assert answer.body["error"]["message"]
    assert answer.body["correlation_id"] == answer.headers["X-Request-ID"]


async def all_runs(api: OrchestratorApi) -> list[dict[str, Any]]:
    return (await api.get("/api/runs", limit="200"))["runs"]


async def test_a_new_run_answers_201_where_it_is_and_who_asked(api: OrchestratorApi) -> None:
    created = run_of(await api.create(template="noop", params={"steps": 2}), HTTPStatus.CREATED)

    assert created.state is RunState.QUEUED
    assert [step.name for step in created.steps] == ["step-1", "step-2"]
    # Without `requested_by`, the run names the token that asked for it.
    assert created.requested_by == "api_token"
    location = f"/api/runs/{created.id}"
    assert (await api.get(location))["id"] == created.id
    run = await api.wait_for(created.id, RunState.SUCCEEDED)
    assert [step.state for step in run.steps] == [StepState.SUCCEEDED] * 2

    by_requester = run_of(
        await api.create(REQUESTER_TOKEN, template="noop", params={"steps": 1}),
        HTTPStatus.CREATED,
    )
    named = run_of(
        await api.create(template="noop", params={"steps": 1}, requested_by="ada"),
        HTTPStatus.CREATED,
    )
    assert by_requester.requested_by == "requester"
    assert named.requested_by == "ada"


async def test_the_location_header_points_at_the_run(api: OrchestratorApi) -> None:
    answer = await api.create(template="noop", params={"steps": 1})

    assert answer.status == HTTPStatus.CREATED
    assert answer.headers["Location"] == f"/api/runs/{answer.body['id']}"


async def test_the_same_idempotency_key_returns_the_first_run(api: OrchestratorApi) -> None:
    before = len(await all_runs(api))
    first = run_of(
        await api.create(template="noop", params={"steps": 1}, idempotency_key="drill-42"),
        HTTPStatus.CREATED,
    )
    # Other params, same key: still the first run, and no second one.
    again = run_of(
        await api.create(template="noop", params={"steps": 3}, idempotency_key="drill-42")
    )

    assert again.id == first.id
    assert len(again.steps) == 1
    assert len(await all_runs(api)) == before + 1


async def test_the_request_id_follows_the_run_into_its_events(api: OrchestratorApi) -> None:
    async with api.session.post(
        f"{api.process.url}/api/runs",
        json={"template": "noop", "params": {"steps": 1}},
        headers={"Authorization": f"Bearer {api.process.token}", "X-Request-ID": "ha-ctx-77"},
    ) as response:
        run = RunInfo.model_validate(await response.json())

    events = await api.events_of(run.id)

    assert {event.correlation_id for event in events} == {"ha-ctx-77"}


async def test_runs_are_listed_by_state_and_template_a_page_at_a_time(
    api: OrchestratorApi,
) -> None:
    runs = [await api.create_noop(steps=1) for _ in range(3)]
    for run in runs:
        await api.wait_for(run.id, RunState.SUCCEEDED)

    page = RunList.model_validate(
        await api.get("/api/runs", state="succeeded,failed", template="noop", limit="2")
    )
    rest = RunList.model_validate(
        await api.get(
            "/api/runs",
            state="succeeded,failed",
            template="noop",
            limit="2",
            offset=str(page.next_offset),
        )
    )
    none = RunList.model_validate(await api.get("/api/runs", template="app_update"))

    assert [run.id for run in page.runs] == [run.id for run in reversed(runs)][:2]
    assert page.next_offset == 2
    assert page.total >= 3
    assert rest.runs[0].id == runs[0].id
    assert all(run.state is RunState.SUCCEEDED for run in page.runs + rest.runs)
    assert none.runs == []
    assert none.total == 0
    assert_error(
        await api.call("GET", "/api/runs", params={"state": "running,done"}),
        HTTPStatus.UNPROCESSABLE_CONTENT,
        "invalid_request",
    )
    assert_error(
        await api.call("GET", "/api/runs", params={"limit": "0"}),
        HTTPStatus.UNPROCESSABLE_CONTENT,
        "invalid_request",
    )


async def test_bad_input_is_refused_clearly_and_changes_nothing(api: OrchestratorApi) -> None:
    done = await api.create_noop(steps=1)
    await api.wait_for(done.id, RunState.SUCCEEDED)
    waiting = await api.create_noop(steps=1, approval=True, choices=["red", "blue"])
    await api.wait_for(waiting.id, RunState.AWAITING_APPROVAL)
    before = await all_runs(api)

    assert_error(
        await api.create(template="teleport", params={}),
        HTTPStatus.UNPROCESSABLE_CONTENT,
        "unknown_template",
    )
    invalid = await api.create(template="noop", params={"steps": 0, "colour": "red"})
    assert_error(invalid, HTTPStatus.UNPROCESSABLE_CONTENT, "invalid_params")
    assert "steps" in invalid.body["error"]["message"]
    assert_error(
        await api.decide(done.id, decision="approve", approver="ada"),
        HTTPStatus.CONFLICT,
        "not_awaiting_approval",
    )
    assert_error(
        await api.decide(waiting.id, decision="approve", approver="ada", choice="green"),
        HTTPStatus.UNPROCESSABLE_CONTENT,
        "invalid_choice",
    )
    assert_error(
        await api.decide("r-000000000000", decision="approve", approver="ada"),
        HTTPStatus.NOT_FOUND,
        "run_not_found",
    )
    assert_error(
        await api.call("GET", "/api/runs/r-000000000000"), HTTPStatus.NOT_FOUND, "run_not_found"
    )
    assert_error(
        await api.call(
            "POST", "/api/runs", data=b'{"template": "noop",', content_type="application/json"
        ),
        HTTPStatus.BAD_REQUEST,
        "invalid_json",
    )
    assert_error(
        await api.create(template="noop", params={}, surprise=True),
        HTTPStatus.UNPROCESSABLE_CONTENT,
        "invalid_request",
    )
    assert_error(
        await api.decide(waiting.id, decision="maybe", approver="ada"),
        HTTPStatus.UNPROCESSABLE_CONTENT,
        "invalid_request",
    )
    assert_error(
        await api.create(READER_TOKEN, template="noop", params={}),
        HTTPStatus.FORBIDDEN,
        "missing_scope",
    )
    unauthorized = await api.create("", template="noop", params={})
    assert_error(unauthorized, HTTPStatus.UNAUTHORIZED, "unauthorized")
    assert unauthorized.headers["WWW-Authenticate"] == "Bearer"
    assert_error(
        await api.create("not-a-token-0123456789", template="noop", params={}),
        HTTPStatus.UNAUTHORIZED,
        "unauthorized",
    )

    assert await all_runs(api) == before
    still = await api.run(waiting.id)
    assert still.state is RunState.AWAITING_APPROVAL
    assert still.approvals == []
    await api.decide(waiting.id, decision="reject", approver="ada", reason="test over")
    # Finished, so the tests after this one see a run list that stands still.
    await api.wait_for(waiting.id, RunState.ROLLED_BACK)


async def test_writes_beyond_the_burst_are_refused_with_retry_after(
    api: OrchestratorApi,
) -> None:
    before = await all_runs(api)
    answers = []
    # Refused writes count too: a client in a loop is stopped whatever it sends.
    for _ in range(WRITE_BURST + 20):
        answer = await api.create(BURSTER_TOKEN, template="teleport", params={})
        answers.append(answer)
        if answer.status == HTTPStatus.TOO_MANY_REQUESTS:
            break

    limited = answers[-1]
    assert_error(limited, HTTPStatus.TOO_MANY_REQUESTS, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    assert len(answers) > WRITE_BURST
    assert {answer.status for answer in answers[:-1]} == {HTTPStatus.UNPROCESSABLE_CONTENT}
    # Other tokens have their own bucket; reading is never limited.
    assert (await api.call("GET", "/api/runs", token=READER_TOKEN)).status == HTTPStatus.OK
    assert_error(
        await api.create(REQUESTER_TOKEN, template="teleport", params={}),
        HTTPStatus.UNPROCESSABLE_CONTENT,
        "unknown_template",
    )
    assert await all_runs(api) == before


async def test_each_token_does_only_what_its_scopes_allow(api: OrchestratorApi) -> None:
    waiting = run_of(
        await api.create(REQUESTER_TOKEN, template="noop", params={"approval": True}),
        HTTPStatus.CREATED,
    )
    await api.wait_for(waiting.id, RunState.AWAITING_APPROVAL)

    assert (await api.call("GET", f"/api/runs/{waiting.id}", token=READER_TOKEN)).status == 200
    assert_error(
        await api.create(READER_TOKEN, template="noop", params={}),
        HTTPStatus.FORBIDDEN,
        "missing_scope",
    )
    assert_error(
        await api.call("POST", f"/api/runs/{waiting.id}/cancel", token=READER_TOKEN),
        HTTPStatus.FORBIDDEN,
        "missing_scope",
    )
    # Whoever may start a run may not approve it.
    assert_error(
        await api.decide(waiting.id, REQUESTER_TOKEN, decision="approve", approver="eve"),
        HTTPStatus.FORBIDDEN,
        "missing_scope",
    )
    assert_error(
        await api.create(APPROVER_TOKEN, template="noop", params={}),
        HTTPStatus.FORBIDDEN,
        "missing_scope",
    )
    assert (await api.run(waiting.id)).state is RunState.AWAITING_APPROVAL

    approved = run_of(
        await api.decide(waiting.id, APPROVER_TOKEN, decision="approve", approver="ada")
    )
    assert [approval.approver for approval in approved.approvals] == ["ada"]
    await api.wait_for(waiting.id, RunState.SUCCEEDED)


async def test_a_cancelled_run_can_be_retried_and_finished(api: OrchestratorApi) -> None:
    run = await api.create_noop(steps=2, approval=True)
    await api.wait_for(run.id, RunState.AWAITING_APPROVAL)

    cancelled = run_of(
        await api.call("POST", f"/api/runs/{run.id}/cancel", json_body={"reason": "not today"})
    )
    assert cancelled.id == run.id
    await api.wait_for(run.id, RunState.CANCELLED)
    assert_error(
        await api.call("POST", f"/api/runs/{run.id}/cancel"),
        HTTPStatus.CONFLICT,
        "already_finished",
    )

    # No body: from the first step that did not succeed.
    retried = run_of(await api.call("POST", f"/api/runs/{run.id}/retry"))
    assert retried.id == run.id
    await api.wait_for(run.id, RunState.AWAITING_APPROVAL)
    await api.approve(run.id)
    done = await api.wait_for(run.id, RunState.SUCCEEDED)

    assert [step.state for step in done.steps] == [StepState.SUCCEEDED] * 2
    assert_error(
        await api.call("POST", f"/api/runs/{run.id}/retry", json_body={"from_step": 1}),
        HTTPStatus.CONFLICT,
        "cannot_retry",
    )


async def test_a_failed_run_is_rolled_back_and_its_log_downloads(
    api: OrchestratorApi, tmp_path: Path
) -> None:
    run = await api.create_noop(steps=3, fail_at=2)
    rolled_back = await api.wait_for(run.id, RunState.ROLLED_BACK)
    assert [step.state for step in rolled_back.steps] == [
        StepState.COMPENSATED,
        StepState.FAILED,
        StepState.SKIPPED,
    ]

    artifacts = ArtifactList.model_validate(await api.get(f"/api/runs/{run.id}/artifacts"))
    rollback_log = next(a for a in artifacts.artifacts if a.kind is ArtifactKind.ROLLBACK_LOG)
    async with api.session.get(
        f"{api.process.url}/api/runs/{run.id}/artifacts/{rollback_log.id}",
        headers={"Authorization": f"Bearer {READER_TOKEN}"},
    ) as response:
        content = await response.read()
        assert response.status == HTTPStatus.OK
        assert response.headers["Content-Type"].startswith(rollback_log.media_type)
        assert response.headers["Content-Disposition"].startswith(
            f'attachment; filename="{rollback_log.name}"'
        )

    assert hashlib.sha256(content).hexdigest() == rollback_log.sha256
    assert len(content) == rollback_log.size
    assert b"step-1" in content
    assert_error(
        await api.call("GET", f"/api/runs/{run.id}/artifacts/a-000000000000"),
        HTTPStatus.NOT_FOUND,
        "artifact_not_found",
    )
    assert_error(
        await api.call("GET", "/api/runs/r-000000000000/artifacts"),
        HTTPStatus.NOT_FOUND,
        "run_not_found",
    )


async def test_templates_are_listed_with_the_schema_of_their_parameters(
    api: OrchestratorApi,
) -> None:
    templates = {
        template["name"]: template for template in (await api.get("/api/templates"))["templates"]
    }

    assert {"noop", "app_update", "config_change"} <= set(templates)
    noop = templates["noop"]
    assert noop["title"]
    Draft202012Validator.check_schema(noop["params_schema"])
    assert Draft202012Validator(noop["params_schema"]).is_valid({"steps": 3, "approval": True})
    assert not Draft202012Validator(noop["params_schema"]).is_valid({"steps": 0})


async def test_no_worker_means_no_nodes(api: OrchestratorApi) -> None:
    nodes = NodeList.model_validate(await api.get("/api/nodes"))

    assert nodes.nodes == []


async def test_stats_count_what_waits_for_a_human(api: OrchestratorApi) -> None:
    waiting = await api.create_noop(steps=1, approval=True)
    await api.wait_for(waiting.id, RunState.AWAITING_APPROVAL)

    stats = RunStats.model_validate(await api.get("/api/stats"))
    assert waiting.id in {awaiting.run_id for awaiting in stats.awaiting_approval}
    assert stats.active >= 1
    assert stats.total >= 1

    await api.approve(waiting.id)
    await api.wait_for(waiting.id, RunState.SUCCEEDED)
    stats = RunStats.model_validate(await api.get("/api/stats"))
    assert waiting.id not in {awaiting.run_id for awaiting in stats.awaiting_approval}
    assert stats.last_result is not None


async def test_the_openapi_document_describes_every_route(api: OrchestratorApi) -> None:
    assert_error(
        await api.call("GET", "/openapi.json", token=""), HTTPStatus.UNAUTHORIZED, "unauthorized"
    )
    document = await api.get("/openapi.json")

    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "KITTY Orchestrator"
    assert document["info"]["version"]
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    schemas = document["components"]["schemas"]
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    operations = {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    for route, scope in ROUTES.items():
        assert route in operations, route
        assert operations[route]["security"] == [{"bearer": [scope]}], route
        assert "401" in operations[route]["responses"], route
        assert "403" in operations[route]["responses"], route
    for route in [("get", "/openapi.json"), ("get", "/api/info"), ("get", "/metrics")]:
        assert route in operations, route
    assert operations[("get", "/health")]["security"] == []
    # The workers' routes are listed too.
    assert any(path.startswith("/api/work/") for _, path in operations)
    operation_ids = [operation["operationId"] for operation in operations.values()]
    assert len(operation_ids) == len(set(operation_ids))
    for operation in operations.values():
        assert operation["summary"]
        assert operation["responses"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref

    create = operations[("post", "/api/runs")]
    assert set(create["responses"]) >= {"200", "201", "400", "401", "403", "422", "429"}
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RunInfo"
    }
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateRunRequest"
    }
    assert create["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "Retry-After" in create["responses"]["429"]["headers"]
    list_runs = operations[("get", "/api/runs")]
    assert {p["name"] for p in list_runs["parameters"]} == {"state", "template", "offset", "limit"}
    run_events = operations[("get", "/api/runs/{run_id}/events")]
    stream = run_events["responses"]["200"]["content"]["text/event-stream"]
    assert stream["x-item-schema"] == {"$ref": "#/components/schemas/RunEvent"}
    assert {p["name"] for p in run_events["parameters"]} == {"run_id", "after", "Last-Event-ID"}


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)
