"""What survives and what is kept: restarts, the event stream, artifacts and their retention.

A restart here stops the engine the way the service stops it (its workflows are
cut where they are, DBOS is destroyed) and starts a new one on the same database;
the api helper's tests SIGKILL the real process.
"""

import asyncio
from collections.abc import AsyncIterator
import hashlib
import logging

import pytest

from kittyai.contract.orchestrator import (
    ApprovalRequest,
    ArtifactKind,
    CreateRunRequest,
    Decision,
    RunErrorCode,
    RunEvent,
    RunEventType,
    RunState,
)
from kittyai.orchestrator.database import Database
from kittyai.orchestrator.dbos_engine import DbosEngine
from kittyai.orchestrator.engine import RunError
from kittyai.orchestrator.store import NewRun, RunStore
from kittyai.orchestrator.templates.base import Peers
from kittyai.orchestrator.templates.noop import NoopParams, NoopTemplate
from tests.lib.orchestrator.conftest import (
    DRILL,
    SQLITE_ONLY,
    Drill,
    EngineStarter,
    drill_steps,
    empty_postgres,
    wait_for_run,
)
from tests.lib.waiting import wait_until


def drill_run(*steps: dict[str, object]) -> CreateRunRequest:
    return CreateRunRequest(template=DRILL, params=drill_steps(*steps))


def tried(drill: Drill, run_id: str) -> list[tuple[str, int]]:
    return [(name, attempt) for run, name, attempt in drill.tries if run == run_id]


# --------------------------------------------------------------------------- restarts


async def test_a_waiting_run_still_waits_after_a_restart(engines: EngineStarter) -> None:
    engine = await engines.start()
    run, _ = await engine.create(
        CreateRunRequest(template="noop", params={"steps": 2, "approval": True})
    )
    await wait_for_run(engine, run.id, RunState.AWAITING_APPROVAL)
    await engines.stop(engine)

    engine = await engines.start()
    assert (await engine.get(run.id)).state is RunState.AWAITING_APPROVAL
    await engine.decide(run.id, ApprovalRequest(decision=Decision.APPROVE, approver="grace"))
    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.SUCCEEDED
    assert [step.attempts for step in done.steps] == [1, 1]


async def test_a_try_cut_by_a_restart_runs_again_and_counts(
    engines: EngineStarter, drill: Drill
) -> None:
    engine = await engines.start()
    run, _ = await engine.create(drill_run({"name": "done"}, {"name": "cut", "block": True}))
    await wait_until(lambda: ("cut", 1) in tried(drill, run.id))
    await engines.stop(engine)
    drill.release.set()

    engine = await engines.start()
    done = await wait_for_run(engine, run.id)

    assert done.state is RunState.SUCCEEDED
    # The step that completed never ran again; the cut try did, as try 2.
    assert tried(drill, run.id) == [("done", 1), ("cut", 1), ("cut", 2)]
    assert [step.attempts for step in done.steps] == [1, 2]
    assert done.steps[1].result["attempt"] == 2


async def test_a_run_queued_without_its_workflow_is_started(
    engines: EngineStarter, database: Database, peers: Peers
) -> None:
    # As after a crash between storing a run and enqueueing it.
    store = await RunStore.open(database, lambda: None)
    steps = await NoopTemplate().plan(NoopParams(steps=2), peers)
    stranded, _ = await store.create_run(
        NewRun(
            template="noop",
            params={"steps": 2},
            steps=steps,
            requested_by=None,
            idempotency_key=None,
            correlation_id=None,
        )
    )

    engine = await engines.start()

    assert (await wait_for_run(engine, stranded.id)).state is RunState.SUCCEEDED


# --------------------------------------------------------------------------- events


async def test_events_are_replayed_then_followed_without_gaps(engine: DbosEngine) -> None:
    followed: list[RunEvent] = []

    async def follow() -> None:
        async for event in engine.events():
            followed.append(event)

    follower = asyncio.create_task(follow())
    first, _ = await engine.create(CreateRunRequest(template="noop", params={"steps": 3}))
    second, _ = await engine.create(CreateRunRequest(template="noop", params={"steps": 3}))
    await wait_for_run(engine, first.id)
    await wait_for_run(engine, second.id)
    await wait_until(lambda: sum(_ended(event) for event in followed) == 2)
    stored = await _take(engine.events(), len(followed))

    # Live, every event arrived once and in order: the same as a replay.
    assert followed == stored
    assert [event.seq for event in stored] == list(range(1, len(stored) + 1))
    assert {event.run_id for event in stored} == {first.id, second.id}
    # A reader resuming after any event gets exactly the rest.
    half = len(stored) // 2
    assert (
        await _take(engine.events(after=stored[half].seq), len(stored) - half - 1)
        == (stored[half + 1 :])
    )
    of_first = [event for event in stored if event.run_id == first.id]
    assert await _take(engine.events(run_id=first.id), len(of_first)) == of_first

    await engine.stop()
    # The stream ends when the engine stops.
    await asyncio.wait_for(follower, 5)
    assert followed == stored


def _ended(event: RunEvent) -> bool:
    return event.type is RunEventType.RUN and event.state.finished


async def _take(stream: AsyncIterator[RunEvent], count: int) -> list[RunEvent]:
    """The next `count` events of `stream`."""
    events: list[RunEvent] = []
    while len(events) < count:
        events.append(await anext(stream))
    return events


# --------------------------------------------------------------------------- artifacts


@SQLITE_ONLY
async def test_a_step_keeps_files_in_its_runs_folder(engine: DbosEngine, data_dir) -> None:
    run, _ = await engine.create(drill_run({"name": "write", "artifact": "../../etc/my plan.txt"}))
    done = await wait_for_run(engine, run.id)

    artifact_id = done.steps[0].result["artifact"]
    assert done.steps[0].artifacts == [artifact_id]
    assert done.steps[0].result["read_back"] == "made by write"
    info, path = await engine.artifact_file(run.id, artifact_id)
    # The name cannot leave the run's folder.
    assert info.name == "my_plan.txt"
    assert path == data_dir / "runs" / run.id / "0-my_plan.txt"
    assert path.read_bytes() == b"made by write"
    assert info.size == len(b"made by write")
    assert info.sha256 == hashlib.sha256(b"made by write").hexdigest()
    assert (info.kind, info.media_type, info.step) == (ArtifactKind.FILE, "text/plain", 0)
    listed = await engine.artifacts(run.id)
    assert [artifact.name for artifact in listed] == ["my_plan.txt", "run.log"]
    assert not list(path.parent.glob(".*")), "no partial files are left behind"

    other, _ = await engine.create(drill_run({"name": "other"}))
    with pytest.raises(RunError) as elsewhere:
        await engine.artifact_file(other.id, artifact_id)
    with pytest.raises(RunError) as no_run:
        await engine.artifacts("r-000000000000")
    assert elsewhere.value.code is RunErrorCode.ARTIFACT_NOT_FOUND
    assert no_run.value.code is RunErrorCode.RUN_NOT_FOUND
    await wait_for_run(engine, other.id)


async def test_retention_removes_the_files_of_finished_runs_only(
    engine: DbosEngine, data_dir
) -> None:
    finished, _ = await engine.create(drill_run({"name": "old", "artifact": "old.txt"}))
    await wait_for_run(engine, finished.id)
    waiting, _ = await engine.create(
        drill_run({"name": "new", "artifact": "new.txt"}, {"name": "gate", "gate": True})
    )
    waiting_info = await wait_for_run(engine, waiting.id, RunState.AWAITING_APPROVAL)

    assert await engine.prune_artifacts(30) == 0
    removed = await engine.prune_artifacts(0)

    assert removed == 2  # old.txt and the run's log
    assert not (data_dir / "runs" / finished.id).exists()
    records = await engine.artifacts(finished.id)
    assert [(a.name, a.available) for a in records] == [("old.txt", False), ("run.log", False)]
    with pytest.raises(RunError) as gone:
        await engine.artifact_file(finished.id, records[0].id)
    assert gone.value.code is RunErrorCode.ARTIFACT_NOT_FOUND
    assert "retention" in gone.value.message
    # The waiting run's file stays.
    _info, path = await engine.artifact_file(waiting.id, waiting_info.steps[0].artifacts[0])
    assert path.read_bytes() == b"made by new"


# --------------------------------------------------------------------------- logs


async def test_dbos_logs_go_through_ours_without_the_database_password(
    postgres_url: str, peers: Peers, data_dir, drill: Drill, caplog: pytest.LogCaptureFixture
) -> None:
    empty_postgres(postgres_url)
    secret_url = postgres_url.replace("postgres@", "postgres:hunter2-pw@")
    database = await Database.open(secret_url, data_dir)
    starter = EngineStarter(database=database, peers=peers, data_dir=data_dir, drill=drill)
    try:
        # At debug level KITTY lets DBOS log everything it has to say.
        with caplog.at_level(logging.DEBUG):
            engine = await starter.start()
            run, _ = await engine.create(CreateRunRequest(template="noop", params={"steps": 1}))
            await wait_for_run(engine, run.id)
            # Were DBOS to log its URL, or an error quoting it:
            logging.getLogger("dbos").warning("Connecting to %s", secret_url)
            await starter.stop(engine)
    finally:
        await starter.close()
        await database.close()

    dbos_records = [record for record in caplog.records if record.name == "dbos"]
    assert any("DBOS launched" in record.getMessage() for record in dbos_records)
    assert "hunter2-pw" not in caplog.text
    assert "Connecting to postgresql://postgres:***@127.0.0.1" in caplog.text
    assert not [
        handler
        for handler in logging.getLogger("dbos").handlers
        if not isinstance(handler, logging.NullHandler)
    ], "DBOS prints nothing by itself"
