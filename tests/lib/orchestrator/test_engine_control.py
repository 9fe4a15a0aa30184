"""Cancelling, retrying, quotas, idempotency and refused requests, on SQLite and PostgreSQL."""

from typing import ClassVar

from pydantic import BaseModel
import pytest

from kittyai.contract.orchestrator import (
    ApprovalRequest,
    CreateRunRequest,
    RunErrorCode,
    RunState,
    StepSpec,
    StepState,
)
from kittyai.orchestrator.dbos_engine import DbosEngine
from kittyai.orchestrator.engine import RunError
from kittyai.orchestrator.options import QuotaOptions
from kittyai.orchestrator.templates import shipped_templates
from kittyai.orchestrator.templates.base import Peers
from tests.lib.orchestrator.conftest import (
    DRILL,
    SQLITE_ONLY,
    Drill,
    EngineStarter,
    drill_steps,
    wait_for_run,
)
from tests.lib.waiting import wait_until


def drill_run(*steps: dict[str, object], **request: object) -> CreateRunRequest:
    return CreateRunRequest(template=DRILL, params=drill_steps(*steps), **request)


def tried(drill: Drill, run_id: str) -> list[tuple[str, int]]:
    return [(name, attempt) for run, name, attempt in drill.tries if run == run_id]


# --------------------------------------------------------------------------- cancel


async def test_cancelling_a_queued_run_ends_it_at_once(
    engines: EngineStarter, drill: Drill
) -> None:
    engine = await engines.start(quotas=QuotaOptions(template_overrides={DRILL: 1}))
    first, _ = await engine.create(drill_run({"name": "hold", "block": True}))
    await wait_until(lambda: tried(drill, first.id))
    second, _ = await engine.create(drill_run({"name": "never"}))

    cancelled = await engine.cancel(second.id, "changed my mind")

    assert cancelled.state is RunState.CANCELLED
    assert cancelled.message == "cancelled: changed my mind"
    assert [step.state for step in cancelled.steps] == [StepState.SKIPPED]
    drill.release.set()
    assert (await wait_for_run(engine, first.id)).state is RunState.SUCCEEDED
    assert tried(drill, second.id) == []
    assert (await engine.get(second.id)).state is RunState.CANCELLED


async def test_cancelling_a_waiting_run_undoes_what_it_did(
    engine: DbosEngine, drill: Drill
) -> None:
    run, _ = await engine.create(drill_run({"name": "prepare"}, {"name": "apply", "gate": True}))
    await wait_for_run(engine, run.id, RunState.AWAITING_APPROVAL)

    await engine.cancel(run.id, None)
    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.CANCELLED
    assert done.message == "cancelled"
    assert [step.state for step in done.steps] == [StepState.COMPENSATED, StepState.SKIPPED]
    assert [name for _run, name in drill.undone] == ["prepare"]
    assert "rollback.log" in {artifact.name for artifact in await engine.artifacts(run.id)}


async def test_cancelling_a_running_run_stops_after_the_running_step(
    engine: DbosEngine, drill: Drill
) -> None:
    run, _ = await engine.create(
        drill_run({"name": "slow", "block": True}, {"name": "later"}, {"name": "last"})
    )
    await wait_until(lambda: tried(drill, run.id))

    asked = await engine.cancel(run.id, "stop")
    assert asked.state is RunState.RUNNING
    drill.release.set()
    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.CANCELLED
    # The running try finished, then was undone; nothing after it ran.
    assert [step.state for step in done.steps] == [
        StepState.COMPENSATED,
        StepState.SKIPPED,
        StepState.SKIPPED,
    ]
    assert tried(drill, run.id) == [("slow", 1)]


@SQLITE_ONLY
async def test_a_finished_run_cannot_be_cancelled(engine: DbosEngine) -> None:
    run, _ = await engine.create(CreateRunRequest(template="noop", params={"steps": 1}))
    await wait_for_run(engine, run.id)

    with pytest.raises(RunError) as refused:
        await engine.cancel(run.id, None)

    assert refused.value.code is RunErrorCode.ALREADY_FINISHED
    assert (await engine.get(run.id)).state is RunState.SUCCEEDED


# --------------------------------------------------------------------------- retry


async def test_a_rolled_back_run_is_retried_from_its_first_step(
    engine: DbosEngine, drill: Drill
) -> None:
    run, _ = await engine.create(drill_run({"name": "one"}, {"name": "two", "fail_tries": 1}))
    assert (await wait_for_run(engine, run.id)).state is RunState.ROLLED_BACK

    # "one" was undone: the run cannot start again after it.
    with pytest.raises(RunError) as refused:
        await engine.retry(run.id, "two")
    assert refused.value.code is RunErrorCode.CANNOT_RETRY
    assert (
        refused.value.message == "step 0 (one) is compensated: retry from step 0 or an earlier one"
    )

    again = await engine.retry(run.id, None)
    assert again.state is RunState.QUEUED
    assert again.id == run.id
    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.SUCCEEDED
    assert tried(drill, run.id) == [("one", 1), ("two", 1), ("one", 2), ("two", 2)]
    assert [step.attempts for step in done.steps] == [2, 2]


async def test_a_retry_from_the_failed_step_keeps_what_succeeded(
    engine: DbosEngine, drill: Drill
) -> None:
    run, _ = await engine.create(
        drill_run({"name": "one", "undo": False}, {"name": "two", "fail_tries": 1, "undo": False})
    )
    failed = await wait_for_run(engine, run.id)
    assert failed.state is RunState.FAILED
    result_of_one = failed.steps[0].result

    await engine.retry(run.id, "two")
    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.SUCCEEDED
    assert tried(drill, run.id) == [("one", 1), ("two", 1), ("two", 2)]
    assert done.steps[0].result == result_of_one
    assert done.steps[1].result["before"] == ["one"]


@SQLITE_ONLY
async def test_only_an_unsuccessful_finished_run_can_be_retried(
    engine: DbosEngine, drill: Drill
) -> None:
    succeeded, _ = await engine.create(drill_run({"name": "fine"}))
    await wait_for_run(engine, succeeded.id)
    running, _ = await engine.create(drill_run({"name": "busy", "block": True}))
    await wait_until(lambda: tried(drill, running.id))

    refusals = []
    for run_id, step in ((succeeded.id, None), (running.id, None), (succeeded.id, "nope")):
        with pytest.raises(RunError) as refused:
            await engine.retry(run_id, step)
        refusals.append(refused.value.code)
    with pytest.raises(RunError) as unknown:
        await engine.retry("r-000000000000", None)

    assert refusals == [RunErrorCode.CANNOT_RETRY] * 3
    assert unknown.value.code is RunErrorCode.RUN_NOT_FOUND
    drill.release.set()
    await wait_for_run(engine, running.id)


@SQLITE_ONLY
async def test_a_cancelled_run_can_be_retried(engine: DbosEngine) -> None:
    run, _ = await engine.create(
        CreateRunRequest(template="noop", params={"steps": 2, "approval": True})
    )
    await wait_for_run(engine, run.id, RunState.AWAITING_APPROVAL)
    await engine.cancel(run.id, None)
    await wait_for_run(engine, run.id)

    await engine.retry(run.id, None)
    # The retry asks at the gate again.
    waiting = await wait_for_run(engine, run.id, RunState.AWAITING_APPROVAL)
    await engine.decide(waiting.id, ApprovalRequest(decision="approve", approver="frank"))

    assert (await wait_for_run(engine, run.id)).state is RunState.SUCCEEDED


# --------------------------------------------------------------------------- quotas, idempotency


async def test_runs_beyond_the_quota_wait_queued(engines: EngineStarter, drill: Drill) -> None:
    engine = await engines.start(quotas=QuotaOptions(template_overrides={DRILL: 1}))
    first, _ = await engine.create(drill_run({"name": "hold", "block": True}))
    await wait_until(lambda: tried(drill, first.id))
    second, _ = await engine.create(drill_run({"name": "wait"}))
    # Another template's run gets through while the drill's quota is full.
    other, _ = await engine.create(CreateRunRequest(template="noop", params={"steps": 1}))
    assert (await wait_for_run(engine, other.id)).state is RunState.SUCCEEDED

    assert (await engine.get(second.id)).state is RunState.QUEUED
    assert tried(drill, second.id) == []
    assert (await engine.stats()).active == 2

    drill.release.set()
    assert (await wait_for_run(engine, first.id)).state is RunState.SUCCEEDED
    assert (await wait_for_run(engine, second.id)).state is RunState.SUCCEEDED


async def test_the_same_idempotency_key_returns_the_first_run(engine: DbosEngine) -> None:
    first, created = await engine.create(
        CreateRunRequest(template="noop", params={"steps": 1}, idempotency_key="nightly-1")
    )
    again, created_again = await engine.create(
        CreateRunRequest(template="noop", params={"steps": 9}, idempotency_key="nightly-1")
    )

    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert again.params["steps"] == 1
    assert (await engine.list()).total == 1
    assert (await wait_for_run(engine, first.id)).state is RunState.SUCCEEDED


# --------------------------------------------------------------------------- refusals


class NoParams(BaseModel):
    pass


class Refusing:
    """A template whose plan always refuses, as a patch outside the allow-list is."""

    name: ClassVar[str] = "refusing"
    title: ClassVar[str] = "Refuses"
    params_model: ClassVar[type[BaseModel]] = NoParams
    executors: ClassVar[dict] = {}

    async def plan(self, params: BaseModel, peers: Peers) -> list[StepSpec]:
        raise RunError(RunErrorCode.PATH_NOT_ALLOWED, "secrets.yaml is not allowed")


@SQLITE_ONLY
async def test_refused_requests_store_nothing(engines: EngineStarter) -> None:
    engine = await engines.start(templates={**shipped_templates(), "refusing": Refusing()})
    refusals = {}
    for request in (
        CreateRunRequest(template="nope"),
        CreateRunRequest(template="noop", params={"steps": 0}),
        CreateRunRequest(template="noop", params={"stepz": 2}),
        CreateRunRequest(template="noop", params={"steps": 2, "fail_at": 3}),
        CreateRunRequest(template="refusing"),
    ):
        with pytest.raises(RunError) as refused:
            await engine.create(request)
        refusals[request.template + str(request.params)] = refused.value

    assert [error.code for error in refusals.values()] == [
        RunErrorCode.UNKNOWN_TEMPLATE,
        RunErrorCode.INVALID_PARAMS,
        RunErrorCode.INVALID_PARAMS,
        RunErrorCode.INVALID_PARAMS,
        RunErrorCode.PATH_NOT_ALLOWED,
    ]
    messages = [error.message for error in refusals.values()]
    assert "noop" in messages[0]
    assert messages[1].startswith("steps:")
    assert messages[2] == "stepz: Extra inputs are not permitted"
    assert "fail_at must be at most steps (2)" in messages[3]
    assert (await engine.list()).total == 0
    assert (await engine.stats()).total == 0


@SQLITE_ONLY
async def test_a_step_for_a_worker_fails_without_a_work_queue(engine: DbosEngine) -> None:
    run, _ = await engine.create(
        CreateRunRequest(template="noop", params={"steps": 1, "capability": "cad"})
    )

    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.FAILED
    assert done.steps[0].capability == "cad"
    assert done.steps[0].message == "no work queue"
