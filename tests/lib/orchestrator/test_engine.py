"""The DBOS engine in-process, on SQLite and on PostgreSQL: runs, retries, rollback, approvals.

Each test drives the engine through the `RunEngine` interface, as the API does, and
checks what a user sees: the run's and steps' states, attempts, results, approvals,
artifacts and events.
"""

import pytest

from kittyai.contract.orchestrator import (
    ApprovalRequest,
    ArtifactKind,
    CreateRunRequest,
    Decision,
    RunErrorCode,
    RunEventType,
    RunState,
    StepState,
)
from kittyai.orchestrator.dbos_engine import DbosEngine
from kittyai.orchestrator.engine import RunError
from kittyai.orchestrator.templates.noop import GATE_REASON
from tests.lib.orchestrator.conftest import (
    DRILL,
    SQLITE_ONLY,
    Drill,
    drill_steps,
    wait_for_run,
)


def noop(**params: object) -> CreateRunRequest:
    return CreateRunRequest(template="noop", params=params)


def drill_run(*steps: dict[str, object], **request: object) -> CreateRunRequest:
    return CreateRunRequest(template=DRILL, params=drill_steps(*steps), **request)


async def rollback_log(engine: DbosEngine, run_id: str) -> str:
    artifacts = {a.name: a for a in await engine.artifacts(run_id)}
    assert artifacts["rollback.log"].kind is ArtifactKind.ROLLBACK_LOG
    _info, path = await engine.artifact_file(run_id, artifacts["rollback.log"].id)
    return path.read_text()


def states(run_steps: list) -> list[StepState]:
    return [step.state for step in run_steps]


# --------------------------------------------------------------------------- runs


async def test_a_noop_run_succeeds_and_records_what_ran(engine: DbosEngine) -> None:
    run, created = await engine.create(noop(steps=3), correlation_id="corr-1")
    assert created
    assert run.state is RunState.QUEUED
    assert run.id.startswith("r-")
    assert len(run.id) == 14

    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.SUCCEEDED
    assert done.finished_at is not None
    assert states(done.steps) == [StepState.SUCCEEDED] * 3
    assert [step.attempts for step in done.steps] == [1, 1, 1]
    assert [step.result for step in done.steps] == [
        {"step": index, "attempt": 1, "seconds": 0.0, "choice": None} for index in range(3)
    ]
    assert all(step.started_at and step.finished_at for step in done.steps)
    events = [event async for event in _stored_events(engine, run.id)]
    assert [event.state for event in events if event.type is RunEventType.RUN] == [
        RunState.QUEUED,
        RunState.RUNNING,
        RunState.SUCCEEDED,
    ]
    assert {event.correlation_id for event in events} == {"corr-1"}
    assert [
        (event.step, event.step_state) for event in events if event.type is RunEventType.STEP
    ] == [
        (index, state) for index in range(3) for state in (StepState.RUNNING, StepState.SUCCEEDED)
    ]
    logs = [event.message for event in events if event.type is RunEventType.LOG]
    assert logs == [f"drill step {number} ran (try 1)" for number in (1, 2, 3)]
    # The run's log artifact has every event in it.
    (run_log,) = [a for a in await engine.artifacts(run.id) if a.kind is ArtifactKind.LOG]
    _info, path = await engine.artifact_file(run.id, run_log.id)
    assert "drill step 3 ran (try 1)" in path.read_text()
    assert path.read_text().rstrip().endswith("succeeded")


async def _stored_events(engine: DbosEngine, run_id: str):
    """The stored events of a finished run (the live part of the stream is not waited for)."""
    stream = engine.events(run_id=run_id)
    run = await engine.get(run_id)
    async for event in stream:
        yield event
        if event.type is RunEventType.RUN and event.state is run.state:
            break


@SQLITE_ONLY
async def test_later_steps_get_earlier_results(engine: DbosEngine) -> None:
    run, _ = await engine.create(drill_run({"name": "one"}, {"name": "two"}, {"name": "three"}))

    done = await wait_for_run(engine, run.id)

    assert [step.result["before"] for step in done.steps] == [[], ["one"], ["one", "two"]]


async def test_a_failing_try_is_retried_with_backoff(engine: DbosEngine, drill: Drill) -> None:
    run, _ = await engine.create(
        drill_run({"name": "flaky", "fail_tries": 2, "attempts": 3, "backoff_s": 0.05})
    )

    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.SUCCEEDED
    (step,) = done.steps
    assert step.attempts == 3
    assert step.result["attempt"] == 3
    assert [attempt for _run, _name, attempt in drill.tries] == [1, 2, 3]
    messages = [
        event.message
        async for event in _stored_events(engine, run.id)
        if event.type is RunEventType.STEP and event.step_state is StepState.RUNNING
    ]
    # Backoff doubles: 0.05 s before the 2nd try, 0.1 s before the 3rd.
    assert messages == [
        "try 1",
        "try 1 failed: flaky fails try 1; next try in 0.05 s",
        "try 2",
        "try 2 failed: flaky fails try 2; next try in 0.1 s",
        "try 3",
    ]


async def test_a_step_out_of_tries_fails_the_run(engine: DbosEngine, drill: Drill) -> None:
    run, _ = await engine.create(drill_run({"name": "broken", "fail_tries": 9, "attempts": 2}))

    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.FAILED
    assert done.steps[0].state is StepState.FAILED
    assert done.steps[0].attempts == 2
    assert done.steps[0].message == "broken fails try 2"
    assert done.message == "step broken failed: broken fails try 2"


@SQLITE_ONLY
async def test_a_failure_that_is_not_retryable_stops_trying(
    engine: DbosEngine, drill: Drill
) -> None:
    run, _ = await engine.create(
        drill_run({"name": "check", "fail_tries": 1, "retryable": False, "attempts": 5})
    )

    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.FAILED
    assert done.steps[0].attempts == 1
    assert len(drill.tries) == 1


@SQLITE_ONLY
async def test_a_try_that_runs_too_long_times_out(engine: DbosEngine) -> None:
    run, _ = await engine.create(drill_run({"name": "stuck", "block": True, "timeout_s": 0.2}))

    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.FAILED
    assert done.steps[0].message == "timed out after 0.2 s"


# --------------------------------------------------------------------------- rollback


async def test_fail_at_undoes_the_succeeded_steps_in_reverse(engine: DbosEngine) -> None:
    run, _ = await engine.create(noop(steps=4, fail_at=3))

    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.ROLLED_BACK
    assert states(done.steps) == [
        StepState.COMPENSATED,
        StepState.COMPENSATED,
        StepState.FAILED,
        StepState.SKIPPED,
    ]
    assert done.steps[2].message == "Drill: step 3 fails as asked"
    assert done.message == "step step-3 failed: Drill: step 3 fails as asked"
    log = await rollback_log(engine, run.id)
    assert log.splitlines() == [
        f"Rollback of run {run.id} (noop): step step-3 failed: Drill: step 3 fails as asked",
        "step step-2: undone by noop.undo",
        "step step-1: undone by noop.undo",
        "Run ended rolled_back.",
    ]
    undo_logs = [
        event.step
        async for event in _stored_events(engine, run.id)
        if event.type is RunEventType.STEP and event.step_state is StepState.COMPENSATED
    ]
    assert undo_logs == [1, 0]


@SQLITE_ONLY
async def test_a_failure_with_nothing_to_undo_ends_failed(engine: DbosEngine) -> None:
    run, _ = await engine.create(noop(steps=2, fail_at=1))

    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.FAILED
    assert states(done.steps) == [StepState.FAILED, StepState.SKIPPED]
    assert "Nothing needed undoing" in await rollback_log(engine, run.id)


async def test_a_compensation_that_fails_ends_the_run_failed(
    engine: DbosEngine, drill: Drill
) -> None:
    run, _ = await engine.create(
        drill_run(
            {"name": "one"},
            {"name": "two", "undo_fails": True},
            {"name": "three", "fail_tries": 1},
        )
    )

    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.FAILED
    assert states(done.steps) == [StepState.COMPENSATED, StepState.SUCCEEDED, StepState.FAILED]
    assert done.steps[1].message == "undoing failed: cannot undo two"
    # The other compensations still ran, in reverse order.
    assert [name for _run, name in drill.undone] == ["two", "one"]
    log = await rollback_log(engine, run.id)
    assert "step two: undoing with drill.undo FAILED: cannot undo two" in log
    assert "step one: undone by drill.undo" in log
    assert done.message.endswith("undoing 1 step(s) failed")


# --------------------------------------------------------------------------- approvals


async def test_an_approved_run_goes_on_and_records_the_approval(engine: DbosEngine) -> None:
    run, _ = await engine.create(noop(steps=2, approval=True))
    waiting = await wait_for_run(engine, run.id, RunState.AWAITING_APPROVAL)
    assert waiting.awaiting_step == 0
    assert waiting.steps[0].state is StepState.AWAITING_APPROVAL
    stats = await engine.stats()
    assert [(a.run_id, a.step, a.reason) for a in stats.awaiting_approval] == [
        (run.id, 0, GATE_REASON)
    ]

    decided = await engine.decide(
        run.id, ApprovalRequest(decision=Decision.APPROVE, approver="alice", reason="looks fine")
    )
    assert decided.state is RunState.RUNNING
    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.SUCCEEDED
    (approval,) = done.approvals
    assert (approval.step, approval.decision, approval.approver, approval.reason) == (
        0,
        Decision.APPROVE,
        "alice",
        "looks fine",
    )
    assert approval.at is not None
    assert (await engine.stats()).awaiting_approval == []


async def test_the_approver_picks_one_of_the_choices(engine: DbosEngine) -> None:
    run, _ = await engine.create(noop(steps=2, approval=True, choices=["small", "large"]))
    await wait_for_run(engine, run.id, RunState.AWAITING_APPROVAL)
    stats = await engine.stats()
    assert stats.awaiting_approval[0].choices == ["small", "large"]

    with pytest.raises(RunError) as missing:
        await engine.decide(run.id, ApprovalRequest(decision=Decision.APPROVE, approver="bob"))
    with pytest.raises(RunError) as wrong:
        await engine.decide(
            run.id, ApprovalRequest(decision=Decision.APPROVE, approver="bob", choice="huge")
        )
    assert missing.value.code is wrong.value.code is RunErrorCode.INVALID_CHOICE
    assert "small, large" in wrong.value.message
    assert (await engine.get(run.id)).state is RunState.AWAITING_APPROVAL

    await engine.decide(
        run.id, ApprovalRequest(decision=Decision.APPROVE, approver="bob", choice="large")
    )
    done = await wait_for_run(engine, run.id)

    assert [step.result["choice"] for step in done.steps] == ["large", "large"]
    assert done.approvals[0].choice == "large"


async def test_a_step_can_set_what_the_next_gate_offers(engine: DbosEngine) -> None:
    run, _ = await engine.create(
        drill_run(
            {"name": "design", "offer": ["variant-1", "variant-2"]},
            {"name": "other"},
            {"name": "pick", "gate": True, "choices": ["placeholder"]},
        )
    )
    await wait_for_run(engine, run.id, RunState.AWAITING_APPROVAL)
    assert (await engine.stats()).awaiting_approval[0].choices == ["variant-1", "variant-2"]

    with pytest.raises(RunError) as stale:
        await engine.decide(
            run.id, ApprovalRequest(decision=Decision.APPROVE, approver="ann", choice="placeholder")
        )
    assert stale.value.code is RunErrorCode.INVALID_CHOICE
    await engine.decide(
        run.id, ApprovalRequest(decision=Decision.APPROVE, approver="ann", choice="variant-2")
    )
    done = await wait_for_run(engine, run.id)

    assert done.steps[2].approval.choices == ["variant-1", "variant-2"]
    assert done.steps[2].result["choice"] == "variant-2"


@SQLITE_ONLY
async def test_choices_a_gate_cannot_offer_fail_the_step(engine: DbosEngine) -> None:
    run, _ = await engine.create(
        drill_run(
            {"name": "design", "offer": ["fine", 2], "attempts": 3}, {"name": "pick", "gate": True}
        )
    )

    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.FAILED
    assert done.steps[0].attempts == 1
    assert done.steps[0].message.startswith("approval_choices must be a list of names: choices.1")


async def test_a_rejection_rolls_back_what_was_done(engine: DbosEngine, drill: Drill) -> None:
    run, _ = await engine.create(drill_run({"name": "prepare"}, {"name": "apply", "gate": True}))
    await wait_for_run(engine, run.id, RunState.AWAITING_APPROVAL)

    await engine.decide(
        run.id, ApprovalRequest(decision=Decision.REJECT, approver="carol", reason="not now")
    )
    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.ROLLED_BACK
    assert states(done.steps) == [StepState.COMPENSATED, StepState.SKIPPED]
    assert done.message == "rejected by carol: not now"
    assert [name for _run, name in drill.undone] == ["prepare"]
    assert [name for _run, name, _attempt in drill.tries] == ["prepare"]
    assert done.approvals[0].decision is Decision.REJECT
    assert "undone by drill.undo" in await rollback_log(engine, run.id)


@SQLITE_ONLY
async def test_a_rejection_before_anything_ran_ends_rolled_back(engine: DbosEngine) -> None:
    run, _ = await engine.create(noop(steps=2, approval=True))
    await wait_for_run(engine, run.id, RunState.AWAITING_APPROVAL)

    await engine.decide(run.id, ApprovalRequest(decision=Decision.REJECT, approver="dave"))
    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.ROLLED_BACK
    assert states(done.steps) == [StepState.SKIPPED, StepState.SKIPPED]


@SQLITE_ONLY
async def test_deciding_a_run_that_is_not_waiting_is_refused(engine: DbosEngine) -> None:
    run, _ = await engine.create(noop(steps=1))
    await wait_for_run(engine, run.id)

    with pytest.raises(RunError) as refused:
        await engine.decide(run.id, ApprovalRequest(decision=Decision.APPROVE, approver="eve"))
    with pytest.raises(RunError) as unknown:
        await engine.decide("r-000000000000", ApprovalRequest(decision="approve", approver="e"))

    assert refused.value.code is RunErrorCode.NOT_AWAITING_APPROVAL
    assert unknown.value.code is RunErrorCode.RUN_NOT_FOUND
    assert (await engine.get(run.id)).approvals == []
