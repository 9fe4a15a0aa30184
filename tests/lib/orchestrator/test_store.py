"""The run store on SQLite and PostgreSQL: listing, stats, idempotency and the event log."""

import asyncio
from datetime import UTC

import pytest

from kittyai.contract.orchestrator import (
    ApprovalGate,
    ApprovalRequest,
    Decision,
    RunErrorCode,
    RunEventType,
    RunState,
    StepSpec,
)
from kittyai.orchestrator.database import Database
from kittyai.orchestrator.engine import RunError
from kittyai.orchestrator.store import NewRun, RunStore


@pytest.fixture
async def store(database: Database) -> RunStore:
    return await RunStore.open(database, lambda: None)


def new_run(template: str = "noop", *, key: str | None = None, gate: bool = False) -> NewRun:
    return NewRun(
        template=template,
        params={"steps": 2},
        steps=[
            StepSpec(
                name="first",
                kind="noop",
                title="First",
                approval=ApprovalGate(reason="Sure?", choices=["a", "b"]) if gate else None,
            ),
            StepSpec(name="second", kind="noop", title="Second"),
        ],
        requested_by="tests",
        idempotency_key=key,
        correlation_id="corr",
    )


async def test_runs_are_listed_newest_first_with_filters_and_pages(store: RunStore) -> None:
    created = [(await store.create_run(new_run(template)))[0] for template in "abab"]
    await store.finish_run(created[0].id, RunState.FAILED, "broke")

    everything = await store.list_runs(limit=3)
    rest = await store.list_runs(offset=3, limit=3)
    of_a = await store.list_runs(template="a")
    failed_of_a = await store.list_runs(states=frozenset({RunState.FAILED}), template="a")

    assert [run.id for run in everything.runs + rest.runs] == [run.id for run in reversed(created)]
    assert (everything.total, everything.next_offset) == (4, 3)
    assert (rest.total, rest.next_offset) == (4, None)
    assert [run.id for run in of_a.runs] == [created[2].id, created[0].id]
    assert [run.id for run in failed_of_a.runs] == [created[0].id]
    assert failed_of_a.runs[0].steps[0].state == "skipped"


async def test_stats_count_active_runs_and_show_the_waiting_ones(store: RunStore) -> None:
    waiting, _ = await store.create_run(new_run(gate=True))
    await store.start_generation(waiting.id, 0)
    await store.open_gate(waiting.id, 0)
    done, _ = await store.create_run(new_run())
    await store.finish_run(done.id, RunState.SUCCEEDED, None)
    await store.create_run(new_run())

    stats = await store.stats()

    assert (stats.active, stats.total) == (2, 3)
    (awaiting,) = stats.awaiting_approval
    assert (awaiting.run_id, awaiting.step, awaiting.title, awaiting.reason) == (
        waiting.id,
        0,
        "First",
        "Sure?",
    )
    assert awaiting.choices == ["a", "b"]
    assert awaiting.since.tzinfo is not None
    assert stats.last_result is not None
    assert (stats.last_result.run_id, stats.last_result.state) == (done.id, RunState.SUCCEEDED)


async def test_one_idempotency_key_makes_one_run_even_at_once(store: RunStore) -> None:
    answers = await asyncio.gather(*(store.create_run(new_run(key="same")) for _ in range(5)))

    assert sorted(created for _run, created in answers) == [False] * 4 + [True]
    assert len({run.id for run, _created in answers}) == 1
    assert (await store.list_runs()).total == 1


async def test_a_refused_decision_writes_nothing(store: RunStore) -> None:
    run, _ = await store.create_run(new_run(gate=True))
    await store.start_generation(run.id, 0)
    await store.open_gate(run.id, 0)
    before = await store.events_after(0)

    with pytest.raises(RunError) as refused:
        await store.decide(
            run.id, ApprovalRequest(decision=Decision.APPROVE, approver="x", choice="c")
        )

    assert refused.value.code is RunErrorCode.INVALID_CHOICE
    assert await store.events_after(0) == before
    after = await store.get_run(run.id)
    assert (after.state, after.approvals) == (RunState.AWAITING_APPROVAL, [])


async def test_every_change_has_its_event_numbered_in_order(store: RunStore) -> None:
    run, _ = await store.create_run(new_run())
    await store.start_generation(run.id, 0)
    await asyncio.gather(*(store.append_log(run.id, 0, f"line {n}") for n in range(20)))
    await store.finish_run(run.id, RunState.SUCCEEDED, None)

    events = await store.events_after(0)

    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert [event.type for event in events[:2]] == [RunEventType.RUN, RunEventType.RUN]
    assert [event.state for event in events[:2]] == [RunState.QUEUED, RunState.RUNNING]
    assert sorted(event.message for event in events if event.type is RunEventType.LOG) == sorted(
        f"line {n}" for n in range(20)
    )
    assert events[-1].state is RunState.SUCCEEDED
    assert {event.correlation_id for event in events} == {"corr"}
    assert all(event.at.tzinfo == UTC for event in events)
    assert await store.events_after(events[-2].seq) == events[-1:]


async def test_a_finished_run_is_not_finished_twice(store: RunStore) -> None:
    run, _ = await store.create_run(new_run())
    first = await store.finish_run(run.id, RunState.FAILED, "first")
    again = await store.finish_run(run.id, RunState.SUCCEEDED, "again")

    assert again.state is first.state is RunState.FAILED
    assert again.message == "first"
    assert [event.state for event in await store.events_after(0)][-1] is RunState.FAILED


async def test_what_a_replay_after_a_crash_repeats_changes_nothing(store: RunStore) -> None:
    """DBOS runs a step again when a crash lost its record, even if its change committed."""
    run, _ = await store.create_run(new_run(gate=True))
    assert await store.start_generation(run.id, 0)
    assert await store.start_generation(run.id, 0), "its own generation, started already"
    assert not await store.start_generation(run.id, 1)
    await store.open_gate(run.id, 0)
    await store.decide(run.id, ApprovalRequest(decision=Decision.APPROVE, approver="x", choice="a"))
    events = await store.events_after(0)

    await store.open_gate(run.id, 0)
    tried = await store.begin_try(run.id, 0)
    await store.step_succeeded(run.id, 0, {"done": True}, None)
    again = await store.begin_try(run.id, 0)

    assert tried is not None
    assert again is not None
    assert again.state is RunState.RUNNING, "the answered gate stays answered"
    assert (again.steps[0].state, again.steps[0].attempts) == ("succeeded", 1)
    later = await store.events_after(events[-1].seq)
    assert [event.step_state for event in later] == ["running", "succeeded"]
    await store.finish_run(run.id, RunState.SUCCEEDED, None)
    assert not await store.start_generation(run.id, 0)
