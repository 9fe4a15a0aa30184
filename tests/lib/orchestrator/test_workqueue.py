"""The work queue on SQLite and on PostgreSQL: placement, quotas, leases and idempotent tries.

The tests play the workers' part by calling the queue's worker side (claim,
heartbeat, complete) the way the HTTP routes do.
"""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kittyai.contract.orchestrator import NodeCapacity, StepInfo
from kittyai.orchestrator.database import Database
from kittyai.orchestrator.nodes import NodeRegistry
from kittyai.orchestrator.templates.base import StepFailedError
from kittyai.orchestrator.workqueue import (
    LeaseEnd,
    StaleLeaseError,
    WorkOutcome,
    WorkQueue,
    WorkState,
)
from kittyai.worker.protocol import WorkItem

RUN = "r-0123456789ab"
# Long enough that no lease runs out unless a test lets it.
LEASE_S = 30.0
SHORT_LEASE_S = 1.0
# How long a claim that must come back empty waits.
EMPTY_CLAIM_S = 0.3


class Queues:
    """Opens work queues on the test's database and closes them at the end."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.nodes = NodeRegistry(stale_after_s=LEASE_S)
        self._open: list[WorkQueue] = []

    def open(
        self, *, lease_timeout_s: float = LEASE_S, database: Database | None = None
    ) -> WorkQueue:
        queue = WorkQueue(database or self.database, self.nodes, lease_timeout_s=lease_timeout_s)
        queue.start()
        self._open.append(queue)
        return queue

    async def close(self) -> None:
        for queue in self._open:
            await queue.close()


@pytest.fixture
async def queues(database: Database) -> AsyncIterator[Queues]:
    queues = Queues(database)
    yield queues
    await queues.close()


def step(index: int = 0, *, capability: str = "cad", timeout_s: float = 60.0) -> StepInfo:
    return StepInfo(
        index=index,
        name=f"step-{index + 1}",
        kind="noop",
        title=f"Step {index + 1}",
        params={"seconds": 0},
        capability=capability,
        timeout_s=timeout_s,
    )


def capacity(
    node: str,
    *,
    max_jobs: int = 2,
    running: int = 0,
    load: float = 0.0,
    cpus: int = 4,
    memory: float = 4000.0,
    capabilities: tuple[str, ...] = ("cad",),
) -> NodeCapacity:
    return NodeCapacity(
        node_id=node,
        online=True,
        capabilities=list(capabilities),
        max_jobs=max_jobs,
        running_jobs=running,
        cpu_count=cpus,
        load_1m=load,
        memory_available_mb=memory,
        at=datetime.now(UTC),
    )


class RunLog:
    """The `log` the engine passes: keeps the lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)


def execute(
    queue: WorkQueue,
    the_step: StepInfo,
    *,
    attempt: int = 1,
    log: RunLog | None = None,
    **extra: Any,
) -> asyncio.Task[WorkOutcome]:
    """Start the engine's call, as a task: it returns once a worker finished the item."""
    return asyncio.create_task(
        queue.execute(run_id=RUN, step=the_step, attempt=attempt, log=log or RunLog(), **extra)
    )


async def claims(
    queue: WorkQueue, *capacities: NodeCapacity, wait_s: float = 10.0
) -> list[list[WorkItem]]:
    """Claim for several nodes at once, as their workers would."""
    return list(await asyncio.gather(*(queue.claim(each, wait_s=wait_s) for each in capacities)))


async def submitted(queue: WorkQueue, count: int) -> None:
    """Wait until the engine's calls have submitted `count` items."""
    async with asyncio.timeout(10):
        while len(await queue.items()) < count:  # noqa: ASYNC110 - the database is the truth
            await asyncio.sleep(0.01)


async def open_claims(
    queue: WorkQueue, *capacities: NodeCapacity, wait_s: float = 10.0
) -> list[asyncio.Task[list[WorkItem]]]:
    """Start claims that wait for work, and let each register before returning."""
    tasks = [asyncio.create_task(queue.claim(each, wait_s=wait_s)) for each in capacities]
    # A claim registers before its first await: one turn of the loop is enough.
    await asyncio.sleep(0)
    return tasks


async def test_an_item_goes_to_the_claiming_node_with_the_most_headroom(queues: Queues) -> None:
    queue = queues.open()
    small, big = await open_claims(
        queue, capacity("small", max_jobs=1), capacity("big", max_jobs=4), wait_s=EMPTY_CLAIM_S
    )

    running = execute(queue, step())

    assert await small == []
    [item] = await big
    await queue.complete(item.id, item.lease_token, {"built": True})
    assert await running == WorkOutcome(result={"built": True}, node="big")


async def test_headroom_counts_the_items_a_node_already_holds(queues: Queues) -> None:
    queue = queues.open()
    first = execute(queue, step(0))
    [[held]] = await claims(queue, capacity("busy", max_jobs=2))

    idle, busy = await open_claims(
        queue,
        capacity("idle", max_jobs=2),
        capacity("busy", max_jobs=2, running=1),
        wait_s=EMPTY_CLAIM_S,
    )
    second = execute(queue, step(1))

    [item] = await idle
    assert await busy == []
    for done in (held, item):
        await queue.complete(done.id, done.lease_token, {})
    assert (await first).node == "busy"
    assert (await second).node == "idle"


@pytest.mark.parametrize(
    ("loser", "winner"),
    [
        # The same headroom: the lower load per CPU wins...
        (capacity("loaded", load=3.0, cpus=2), capacity("calm", load=3.0, cpus=8)),
        # ...and with the same load, more free memory.
        (capacity("tight", memory=500.0), capacity("roomy", memory=8000.0)),
    ],
)
async def test_ties_go_to_the_lower_load_then_more_memory(
    queues: Queues, loser: NodeCapacity, winner: NodeCapacity
) -> None:
    queue = queues.open()
    losing, winning = await open_claims(queue, loser, winner, wait_s=EMPTY_CLAIM_S)

    running = execute(queue, step())

    assert await losing == []
    [item] = await winning
    await queue.complete(item.id, item.lease_token, {})
    assert (await running).node == winner.node_id


async def test_a_node_never_holds_more_than_its_max_jobs(queues: Queues) -> None:
    queue = queues.open()
    runs = [execute(queue, step(index)) for index in range(3)]
    await submitted(queue, 3)

    [handed] = await claims(queue, capacity("only", max_jobs=2))
    # It claims again as if it ran nothing: the queue counts what it holds.
    [more] = await claims(queue, capacity("only", max_jobs=2), wait_s=EMPTY_CLAIM_S)

    assert len(handed) == 2
    assert more == []
    waiting = asyncio.create_task(queue.claim(capacity("only", max_jobs=2), wait_s=10))
    await queue.complete(handed[0].id, handed[0].lease_token, {})
    [last] = await waiting
    for item in (handed[1], last):
        await queue.complete(item.id, item.lease_token, {})
    assert [(await run).node for run in runs] == ["only"] * 3


async def test_an_item_no_node_can_take_stays_pending_until_one_can(queues: Queues) -> None:
    queue = queues.open()
    running = execute(queue, step(capability="gpu"))

    [nothing] = await claims(queue, capacity("cad-box"), wait_s=EMPTY_CLAIM_S)
    [record] = await queue.items(run_id=RUN)
    [[item]] = await claims(queue, capacity("gpu-box", capabilities=("cad", "gpu")))

    assert nothing == []
    assert record.state is WorkState.PENDING
    await queue.complete(item.id, item.lease_token, {})
    assert (await running).node == "gpu-box"


async def test_an_expired_lease_requeues_the_item_and_refuses_the_old_token(
    queues: Queues,
) -> None:
    queue = queues.open(lease_timeout_s=SHORT_LEASE_S)
    running = execute(queue, step())
    [[lost]] = await claims(queue, capacity("vanished"))

    # The first node never heartbeats: the second gets the item once the lease ran out.
    [[item]] = await claims(queue, capacity("survivor"))

    assert item.id == lost.id
    assert item.lease_token != lost.lease_token
    with pytest.raises(StaleLeaseError):
        await queue.complete(lost.id, lost.lease_token, {"twice": True})
    await queue.complete(item.id, item.lease_token, {"once": True})
    assert await running == WorkOutcome(result={"once": True}, node="survivor")
    [record] = await queue.items(run_id=RUN)
    assert record.finished_by == "survivor"
    assert [(lease.node, lease.end) for lease in record.leases] == [
        ("vanished", LeaseEnd.EXPIRED),
        ("survivor", LeaseEnd.COMPLETED),
    ]


async def test_heartbeats_keep_the_lease(queues: Queues) -> None:
    queue = queues.open(lease_timeout_s=SHORT_LEASE_S)
    running = execute(queue, step())
    [[item]] = await claims(queue, capacity("steady"))
    [other] = await open_claims(queue, capacity("eager"), wait_s=3 * SHORT_LEASE_S)

    while not other.done():
        await queue.heartbeat(item.id, item.lease_token)
        await asyncio.sleep(SHORT_LEASE_S / 10)

    assert other.result() == []
    await queue.complete(item.id, item.lease_token, {})
    assert (await running).node == "steady"


async def test_a_released_item_goes_to_another_node(queues: Queues) -> None:
    queue = queues.open()
    running = execute(queue, step())
    [[given_back]] = await claims(queue, capacity("stopping"))

    await queue.release(given_back.id, given_back.lease_token)
    [[item]] = await claims(queue, capacity("other"))

    with pytest.raises(StaleLeaseError):
        await queue.heartbeat(given_back.id, given_back.lease_token)
    await queue.complete(item.id, item.lease_token, {})
    assert (await running).node == "other"
    [record] = await queue.items(run_id=RUN)
    assert [lease.end for lease in record.leases] == [LeaseEnd.RELEASED, LeaseEnd.COMPLETED]


async def test_completing_again_with_the_same_token_changes_nothing(queues: Queues) -> None:
    queue = queues.open()
    running = execute(queue, step())
    [[item]] = await claims(queue, capacity("node"))

    await queue.complete(item.id, item.lease_token, {"volume": 1})
    # The worker missed the answer and asks again.
    await queue.complete(item.id, item.lease_token, {"volume": 1})

    assert (await running).result == {"volume": 1}
    with pytest.raises(StaleLeaseError):
        await queue.fail(item.id, item.lease_token, "too late")
    [record] = await queue.items(run_id=RUN)
    assert record.state is WorkState.SUCCEEDED
    assert len(record.leases) == 1


async def test_a_worker_failure_fails_the_try_with_its_message(queues: Queues) -> None:
    queue = queues.open()
    running = execute(queue, step())
    [[item]] = await claims(queue, capacity("node"))

    await queue.fail(item.id, item.lease_token, "unknown part family 'gear'", retryable=False)

    with pytest.raises(StepFailedError, match="unknown part family 'gear'") as failure:
        await running
    assert failure.value.retryable is False


async def test_a_step_no_worker_takes_in_time_fails_and_stays_failed(queues: Queues) -> None:
    queue = queues.open()

    with pytest.raises(StepFailedError, match="no worker with the capability 'gpu' took the step"):
        await queue.execute(
            run_id=RUN, step=step(capability="gpu", timeout_s=0.5), attempt=1, log=RunLog()
        )

    [nothing] = await claims(queue, capacity("late", capabilities=("gpu",)), wait_s=EMPTY_CLAIM_S)
    assert nothing == []


async def test_a_worker_that_overruns_the_timeout_cannot_complete(queues: Queues) -> None:
    queue = queues.open()
    running = execute(queue, step(timeout_s=1.0))
    [[item]] = await claims(queue, capacity("slow"))

    with pytest.raises(StepFailedError, match="node slow did not finish the step within 1 s"):
        await running

    with pytest.raises(StaleLeaseError):
        await queue.complete(item.id, item.lease_token, {})
    [record] = await queue.items(run_id=RUN)
    assert [lease.end for lease in record.leases] == [LeaseEnd.TIMED_OUT]


async def test_log_lines_reach_the_run_log_and_renew_the_lease(queues: Queues) -> None:
    queue = queues.open()
    log = RunLog()
    running = execute(queue, step(), log=log)
    [[item]] = await claims(queue, capacity("chatty"))

    await queue.append_log(item.id, item.lease_token, ["slicing", "done"])
    await queue.complete(item.id, item.lease_token, {})

    await running
    assert log.lines == ["slicing", "done"]


async def test_the_item_carries_what_earlier_steps_returned(queues: Queues) -> None:
    queue = queues.open()
    running = execute(queue, step(1), attempt=2, results={"step-1": {"variant": "b"}}, choice="b")

    [[item]] = await claims(queue, capacity("node"))

    assert (item.step, item.attempt, item.results, item.choice) == (
        1,
        2,
        {"step-1": {"variant": "b"}},
        "b",
    )
    await queue.complete(item.id, item.lease_token, {})
    await running


async def test_the_same_try_submitted_again_is_the_same_item(queues: Queues) -> None:
    queue = queues.open()
    first = execute(queue, step())
    [[item]] = await claims(queue, capacity("node"))
    # The engine's call is cut off (the orchestrator stops) and made again.
    first.cancel()
    again = execute(queue, step())

    await queue.complete(item.id, item.lease_token, {"n": 1})

    assert (await again).result == {"n": 1}
    # A call for a finished try returns its result at once.
    assert (await execute(queue, step())).result == {"n": 1}
    another_try = execute(queue, step(), attempt=2)
    [[retried]] = await claims(queue, capacity("node"))
    assert retried.id != item.id
    await queue.complete(retried.id, retried.lease_token, {"n": 2})
    assert (await another_try).result == {"n": 2}
    assert [record.attempt for record in await queue.items(run_id=RUN)] == [1, 2]


async def test_after_a_restart_the_engine_finds_its_item_and_the_worker_its_lease(
    queues: Queues, database_url: str | None, data_dir: Path
) -> None:
    before = queues.open()
    cut_off = execute(before, step())
    [[item]] = await claims(before, capacity("node"))
    cut_off.cancel()
    await before.close()
    await queues.database.close()

    reopened = await Database.open(database_url, data_dir)
    try:
        after = queues.open(database=reopened)
        resumed = execute(after, step())
        await after.heartbeat(item.id, item.lease_token)
        await after.complete(item.id, item.lease_token, {"survived": True})

        assert await resumed == WorkOutcome(result={"survived": True}, node="node")
        [record] = await after.items(run_id=RUN)
        assert len(record.leases) == 1
    finally:
        await queues.close()
        await reopened.close()


async def test_the_registry_lists_what_each_node_holds(queues: Queues) -> None:
    queue = queues.open()
    queues.nodes.record(capacity("holder"))
    queues.nodes.record(capacity("idle"))
    running = execute(queue, step())

    [[item]] = await claims(queue, capacity("holder"))

    assert {node.node_id: node.claimed for node in queues.nodes.list().nodes} == {
        "holder": 1,
        "idle": 0,
    }
    await queue.complete(item.id, item.lease_token, {})
    await running


async def test_a_later_try_supersedes_an_earlier_one_the_engine_gave_up_on(
    queues: Queues,
) -> None:
    queue = queues.open()
    abandoned = execute(queue, step())
    [[stale]] = await claims(queue, capacity("slow"))
    # The engine's own timeout cut the first try short; it starts the second.
    abandoned.cancel()
    second = execute(queue, step(), attempt=2)

    [[item]] = await claims(queue, capacity("fast"))

    with pytest.raises(StaleLeaseError):
        await queue.heartbeat(stale.id, stale.lease_token)
    await queue.complete(item.id, item.lease_token, {})
    assert (await second).node == "fast"
    first, _ = await queue.items(run_id=RUN)
    assert (first.state, first.message) == (WorkState.FAILED, "superseded by try 2")
    assert [lease.end for lease in first.leases] == [LeaseEnd.SUPERSEDED]


async def test_a_new_claim_of_a_node_ends_its_earlier_one(queues: Queues) -> None:
    queue = queues.open()
    # The worker restarted while its first claim was still open on the orchestrator.
    [forgotten] = await open_claims(queue, capacity("restarted"))
    [current] = await open_claims(queue, capacity("restarted"))

    running = execute(queue, step())

    assert await forgotten == []
    [item] = await current
    await queue.complete(item.id, item.lease_token, {})
    assert (await running).node == "restarted"


async def test_the_engine_timing_the_try_out_itself_times_the_item_out(queues: Queues) -> None:
    queue = queues.open()
    the_step = step(timeout_s=1.0)

    async def engine_try() -> WorkOutcome:
        # The engine's clock for the try starts before the item exists.
        async with asyncio.timeout(the_step.timeout_s):
            return await queue.execute(run_id=RUN, step=the_step, attempt=1, log=RunLog())

    running = asyncio.create_task(engine_try())
    [[item]] = await claims(queue, capacity("slow"))

    with pytest.raises(TimeoutError):
        await running
    with pytest.raises(StaleLeaseError):
        await queue.complete(item.id, item.lease_token, {})
    [record] = await queue.items(run_id=RUN)
    assert record.state is WorkState.FAILED
    assert [lease.end for lease in record.leases] == [LeaseEnd.TIMED_OUT]
