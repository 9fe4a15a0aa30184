"""The work queue: steps that need a worker's capability, placed on nodes under a lease.

The engine runs a step that has a `capability` through `execute`, which returns a
`WorkOutcome`::

    outcome = await queue.execute(
        run_id=ctx.run_id, step=ctx.step, attempt=ctx.attempt, log=ctx.log,
        results=ctx.results, choice=ctx.choice,
    )
    outcome.result  # what the worker returned: the step's result
    outcome.node  # the worker that completed it: the step's `node`

`execute` submits a work item keyed by (run id, step index, attempt): calling it
again for the same try, after an orchestrator crash, finds the same item, and
returns at once when the item has already finished. It raises `StepFailedError`
with the worker's message (and its `retryable`) when the worker failed the step,
or when no worker finished it within the step's `timeout_s`, counted from the
item's creation so a restart does not restart the clock (the engine may time the
try out itself: a call cancelled within `DEADLINE_SLACK_S` of the deadline times
the item out too, so no worker runs or completes it later). Worker log lines go to
`log` while `execute` waits; lines sent while no `execute` waits (the orchestrator
was restarting) are dropped.

Placement. Workers ask for work with long-polling claims (`work_api`). Whenever
something changes (a claim arrives, an item is submitted, finishes or comes back)
one pass hands each pending item, oldest first, to the claiming node that has its
capability and the most headroom: its `max_jobs` minus the items it holds; ties go
to the lower load per CPU, then to more free memory. A worker with a free slot
always has a claim open, so the claiming nodes are the live nodes that can take
work now. A node never holds more than its `max_jobs`; an item that no node can
take stays pending until one can.

Leases. A handed-out item is leased with a fresh token until `lease_timeout_s`
after its last heartbeat (or log line). An expired lease puts the item back in
the queue: the same try goes on, on whichever node gets it next. Every worker
call about an item must carry its current token; a stale one raises
`StaleLeaseError` (HTTP 409), so a step is never completed twice. A node's last
will does not end its leases early: a worker that lost only the broker still runs
its steps, and re-queueing waits for the lease to run out. Every hand-out is
recorded with its node, times and how it ended, and every item with the node
that finished it (`items`). Submitting a later try of a step fails the earlier
tries still queued or held: the engine gave up on them (its own timeout cut the
call short), so no worker may run or complete them any more.

Wiring, in the service's setup (import this module before `Database.open`, which
creates its tables)::

    nodes = NodeRegistry(stale_after_s=options.lease_timeout_s)
    nodes.listen(runtime.mqtt)
    queue = WorkQueue(database, nodes, lease_timeout_s=options.lease_timeout_s)
    queue.start()
    runtime.on_stop(queue.close)
    add_work_routes(runtime.app, queue, nodes)
"""

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
import logging
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    Row,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from kittyai.contract.orchestrator import NodeCapacity, StepInfo
from kittyai.orchestrator.database import METADATA, Database, UtcDateTime, utc_now
from kittyai.orchestrator.nodes import NodeRegistry
from kittyai.orchestrator.templates.base import StepFailedError
from kittyai.worker.protocol import WorkItem

_LOGGER = logging.getLogger(__name__)

ITEM_ID_PREFIX = "w-"
_ID_HEX_BYTES = 8
_TOKEN_BYTES = 24
# The in-process notification is the fast path; this poll only covers a lost one.
OUTCOME_POLL_S = 5.0
# A call cut off this close to its item's deadline times the item out.
DEADLINE_SLACK_S = 1.0
# Pending items one placement pass considers; the rest wait for the next pass.
PLACEMENT_BATCH = 500

type LogLine = Callable[[str], Awaitable[None]]


class WorkState(StrEnum):
    """Where a work item is."""

    PENDING = "pending"
    LEASED = "leased"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class LeaseEnd(StrEnum):
    """How one hand-out of an item ended."""

    # Still held.
    HELD = "held"
    COMPLETED = "completed"
    FAILED = "failed"
    # Not renewed in time: the item went back to the queue.
    EXPIRED = "expired"
    # Given back by the worker, e.g. on its way down.
    RELEASED = "released"
    # The step's timeout ran out while it was held.
    TIMED_OUT = "timed_out"
    # The engine started a later try of the step.
    SUPERSEDED = "superseded"


class UnknownWorkItemError(Exception):
    """No work item has this id."""


class StaleLeaseError(Exception):
    """The lease token is not (or no longer) the item's: another node may hold it now."""


@dataclass(frozen=True, slots=True)
class WorkOutcome:
    """A step a worker completed: its result and the node that ran it."""

    result: dict[str, Any]
    node: str


class LeaseRecord(BaseModel):
    """One hand-out of a work item."""

    model_config = ConfigDict(extra="forbid")

    number: int = Field(ge=1)
    node: str
    started_at: datetime
    ended_at: datetime | None
    end: LeaseEnd


class WorkItemRecord(BaseModel):
    """A work item and its history."""

    model_config = ConfigDict(extra="forbid")

    id: str
    run_id: str
    step: int
    step_name: str
    kind: str
    capability: str
    attempt: int
    state: WorkState
    # The node holding it while leased.
    node: str | None
    # The node that completed or failed it.
    finished_by: str | None
    result: dict[str, Any] | None
    message: str | None
    created_at: datetime
    finished_at: datetime | None
    leases: list[LeaseRecord]


WORK_ITEMS = Table(
    "kitty_work_items",
    METADATA,
    Column("id", String(32), primary_key=True),
    Column("run_id", String(64), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("step_name", String(64), nullable=False),
    Column("title", Text, nullable=False),
    Column("kind", String(128), nullable=False),
    Column("capability", String(128), nullable=False),
    Column("params", JSON, nullable=False),
    Column("results", JSON, nullable=False),
    Column("choice", String(128)),
    Column("timeout_s", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("node", String(64)),
    Column("lease_token", String(64)),
    Column("lease_expires_at", UtcDateTime),
    Column("leases", Integer, nullable=False, default=0),
    Column("finished_by", String(64)),
    Column("result", JSON),
    Column("message", Text),
    Column("retryable", Boolean, nullable=False, default=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    UniqueConstraint("run_id", "step_index", "attempt", name="kitty_work_items_try"),
    Index("kitty_work_items_by_state", "state", "created_at"),
)

WORK_LEASES = Table(
    "kitty_work_leases",
    METADATA,
    Column("item_id", String(32), ForeignKey(WORK_ITEMS.c.id), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("node", String(64), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime),
    Column("end", String(16), nullable=False),
)

_FINISHED = (WorkState.SUCCEEDED, WorkState.FAILED)


@dataclass(eq=False, slots=True)
class _Claim:
    """A node waiting for work, and what a placement pass handed it."""

    capacity: NodeCapacity
    slots: int
    handed: list[WorkItem] = field(default_factory=list)
    filled: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class _Offer:
    """A claim as a placement pass sees it, off the event loop."""

    node: str
    capabilities: frozenset[str]
    max_jobs: int
    slots: int
    load_per_cpu: float
    memory_available_mb: float


@dataclass(eq=False, slots=True)
class _Watch:
    """An `execute` waiting for its item."""

    log: LogLine
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class WorkQueue:
    """Submits, places, leases and finishes work items; see the module docstring."""

    def __init__(self, database: Database, nodes: NodeRegistry, *, lease_timeout_s: float) -> None:
        """Queue work in `database`; report held items to `nodes`."""
        self._database = database
        self._nodes = nodes
        self.lease_timeout_s = lease_timeout_s
        self._lease = timedelta(seconds=lease_timeout_s)
        self._claims: list[_Claim] = []
        self._watches: defaultdict[str, set[_Watch]] = defaultdict(set)
        # One pass at a time: a pass reads the claims and hands them items.
        self._placing = asyncio.Lock()
        self._placement_needed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start placing items and re-queueing expired leases in the background."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._place_continually(), name="kitty-work-placement"),
            asyncio.create_task(self._expire_continually(), name="kitty-work-leases"),
        ]
        self._placement_needed.set()

    async def close(self) -> None:
        """Stop the background work; items and leases stay as they are."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for claim in self._claims:
            claim.filled.set()

    # The engine's side.

    async def execute(
        self,
        *,
        run_id: str,
        step: StepInfo,
        attempt: int,
        log: LogLine,
        results: Mapping[str, Mapping[str, Any]] | None = None,
        choice: str | None = None,
    ) -> WorkOutcome:
        """Have a worker run one try of `step`, and return what it returned.

        Raises:
            StepFailedError: The worker failed the step, or none finished it in time.
        """
        if step.capability is None:
            raise ValueError(f"step {step.name!r} names no capability: the engine runs it")
        item_id = await self._submit(run_id, step, attempt, results or {}, choice)
        watch = _Watch(log)
        self._watches[item_id].add(watch)
        self._placement_needed.set()
        try:
            return await self._outcome(item_id, watch, step.timeout_s)
        finally:
            self._watches[item_id].discard(watch)
            if not self._watches[item_id]:
                del self._watches[item_id]

    async def items(self, *, run_id: str | None = None) -> list[WorkItemRecord]:
        """Return the work items (of one run), oldest first, with their hand-outs."""
        return await self._database.transaction(lambda conn: _records(conn, run_id))

    # The workers' side.

    async def claim(self, capacity: NodeCapacity, *, wait_s: float) -> list[WorkItem]:
        """Wait up to `wait_s` for items `capacity`'s node can take; return them leased."""
        claim = _Claim(capacity, slots=max(0, capacity.max_jobs - capacity.running_jobs))
        if claim.slots == 0:
            return []
        async with self._placing:
            for earlier in self._claims:
                if earlier.capacity.node_id == capacity.node_id:
                    # A worker has one claim open: its earlier one's connection is gone.
                    earlier.filled.set()
            self._claims.append(claim)
        self._placement_needed.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(claim.filled.wait(), wait_s)
        finally:
            # Under the lock, so no pass hands it items after it stopped waiting.
            async with self._placing:
                self._claims.remove(claim)
        return claim.handed

    async def heartbeat(self, item_id: str, lease_token: str) -> datetime:
        """Renew the lease on an item; return when it runs out now."""
        return await self._database.transaction(
            lambda conn: _renew(conn, item_id, lease_token, utc_now() + self._lease)
        )

    async def append_log(self, item_id: str, lease_token: str, lines: Sequence[str]) -> None:
        """Renew the lease and pass `lines` to the `execute` waiting for the item."""
        await self.heartbeat(item_id, lease_token)
        for watch in list(self._watches.get(item_id, ())):
            for line in lines:
                await watch.log(line)

    async def complete(self, item_id: str, lease_token: str, result: dict[str, Any]) -> None:
        """Finish an item with the step's result."""
        await self._finish(item_id, lease_token, WorkState.SUCCEEDED, result=result)

    async def fail(
        self, item_id: str, lease_token: str, message: str, *, retryable: bool = True
    ) -> None:
        """Finish an item as failed; the engine's try fails with `message`."""
        await self._finish(
            item_id, lease_token, WorkState.FAILED, message=message, retryable=retryable
        )

    async def release(self, item_id: str, lease_token: str) -> None:
        """Put a held item back in the queue for another node."""
        await self._database.transaction(
            lambda conn: _end_lease(conn, item_id, lease_token, LeaseEnd.RELEASED, utc_now())
        )
        self._placement_needed.set()

    # Submitting and waiting.

    async def _submit(
        self,
        run_id: str,
        step: StepInfo,
        attempt: int,
        results: Mapping[str, Mapping[str, Any]],
        choice: str | None,
    ) -> str:
        def find(conn: Connection) -> str | None:
            return conn.scalar(
                select(WORK_ITEMS.c.id).where(
                    WORK_ITEMS.c.run_id == run_id,
                    WORK_ITEMS.c.step_index == step.index,
                    WORK_ITEMS.c.attempt == attempt,
                )
            )

        def find_or_insert(conn: Connection) -> str:
            if (found := find(conn)) is not None:
                return found
            now = utc_now()
            item_id = ITEM_ID_PREFIX + secrets.token_hex(_ID_HEX_BYTES)
            conn.execute(
                insert(WORK_ITEMS).values(
                    id=item_id,
                    run_id=run_id,
                    step_index=step.index,
                    attempt=attempt,
                    step_name=step.name,
                    title=step.title,
                    kind=step.kind,
                    capability=step.capability,
                    params=step.params,
                    results={name: dict(result) for name, result in results.items()},
                    choice=choice,
                    timeout_s=step.timeout_s,
                    state=WorkState.PENDING,
                    leases=0,
                    retryable=True,
                    created_at=now,
                    updated_at=now,
                )
            )
            _supersede(conn, run_id, step.index, attempt, now)
            return item_id

        try:
            return await self._database.transaction(find_or_insert)
        except IntegrityError:
            # The same try submitted twice at once: the other insert won.
            found = await self._database.transaction(find)
            if found is None:
                raise
            return found

    async def _outcome(self, item_id: str, watch: _Watch, timeout_s: float) -> WorkOutcome:
        while True:
            watch.changed.clear()
            row = await self._database.transaction(lambda conn: _item_row(conn, item_id))
            if row.state in _FINISHED:
                return _outcome_of(row)
            deadline = row.created_at + timedelta(seconds=timeout_s)
            remaining = (deadline - utc_now()).total_seconds()
            if remaining <= 0:
                return _outcome_of(await self._time_out(item_id, timeout_s))
            try:
                await asyncio.wait_for(watch.changed.wait(), min(remaining, OUTCOME_POLL_S))
            except TimeoutError:
                continue
            except asyncio.CancelledError:
                # The engine's own timeout for the try started before the item
                # existed, so it fires a moment before this one would: the item
                # times out all the same, and no worker runs or completes it later.
                # Cut off earlier (the orchestrator stops), the item waits for
                # the engine to call again after the restart.
                if (deadline - utc_now()).total_seconds() <= DEADLINE_SLACK_S:
                    await asyncio.shield(self._time_out(item_id, timeout_s))
                raise

    async def _time_out(self, item_id: str, timeout_s: float) -> Row[Any]:
        row = await self._database.transaction(
            lambda conn: _time_out(conn, item_id, timeout_s, utc_now())
        )
        self._placement_needed.set()
        return row

    async def _finish(
        self,
        item_id: str,
        lease_token: str,
        state: WorkState,
        *,
        result: dict[str, Any] | None = None,
        message: str | None = None,
        retryable: bool = True,
    ) -> None:
        await self._database.transaction(
            lambda conn: _finish_item(
                conn,
                item_id,
                lease_token,
                state=state,
                result=result,
                message=message,
                retryable=retryable,
                now=utc_now(),
            )
        )
        for watch in self._watches.get(item_id, ()):
            watch.changed.set()
        self._placement_needed.set()

    # Placement and leases, in the background.

    async def _place_continually(self) -> None:
        while True:
            await self._placement_needed.wait()
            self._placement_needed.clear()
            try:
                await self._place()
            except Exception:
                # The next change or expiry check tries again.
                _LOGGER.exception("Placing work items failed")

    async def _place(self) -> None:
        async with self._placing:
            claims = [claim for claim in self._claims if not claim.filled.is_set()]
            offers = [_offer(claim) for claim in claims]
            lease_until = utc_now() + self._lease
            handed, held = await self._database.transaction(
                lambda conn: _hand_out(conn, offers, lease_until)
            )
            for claim, items in zip(claims, handed, strict=True):
                if items:
                    claim.handed.extend(items)
                    claim.filled.set()
        self._nodes.set_claimed(held)

    async def _expire_continually(self) -> None:
        # Four checks per lease: an item comes back at most a quarter lease late.
        interval = self.lease_timeout_s / 4
        while True:
            await asyncio.sleep(interval)
            try:
                expired = await self._database.transaction(
                    lambda conn: _expire_leases(conn, utc_now())
                )
            except Exception:
                _LOGGER.exception("Re-queueing expired work items failed")
                continue
            for item_id, node in expired:
                _LOGGER.warning(
                    "The lease of node %s on work item %s expired; the item is queued again",
                    node,
                    item_id,
                )
            if expired:
                self._placement_needed.set()


def _offer(claim: _Claim) -> _Offer:
    capacity = claim.capacity
    return _Offer(
        node=capacity.node_id,
        capabilities=frozenset(capacity.capabilities),
        max_jobs=capacity.max_jobs,
        slots=claim.slots,
        load_per_cpu=capacity.load_1m / capacity.cpu_count,
        memory_available_mb=capacity.memory_available_mb,
    )


# What runs in a transaction, on a database thread.


def _held_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        select(WORK_ITEMS.c.node, func.count())
        .where(WORK_ITEMS.c.state == WorkState.LEASED)
        .group_by(WORK_ITEMS.c.node)
    )
    return dict(rows.tuples().all())


def _hand_out(
    conn: Connection, offers: Sequence[_Offer], lease_until: datetime
) -> tuple[list[list[WorkItem]], dict[str, int]]:
    """Lease pending items to the offers; return each offer's items and the held counts."""
    held = _held_counts(conn)
    handed: list[list[WorkItem]] = [[] for _ in offers]
    if not offers:
        return handed, held
    slots = [offer.slots for offer in offers]
    capabilities = frozenset().union(*(offer.capabilities for offer in offers))
    pending = conn.execute(
        select(WORK_ITEMS)
        .where(
            WORK_ITEMS.c.state == WorkState.PENDING,
            WORK_ITEMS.c.capability.in_(capabilities),
        )
        .order_by(WORK_ITEMS.c.created_at, WORK_ITEMS.c.id)
        .limit(PLACEMENT_BATCH)
    ).all()
    now = utc_now()
    for row in pending:
        able = [
            index
            for index, offer in enumerate(offers)
            if row.capability in offer.capabilities
            and slots[index] > 0
            and held.get(offer.node, 0) < offer.max_jobs
        ]
        if not able:
            continue

        def rank(index: int) -> tuple[int, float, float, str]:
            offer = offers[index]
            headroom = offer.max_jobs - held.get(offer.node, 0)
            return (-headroom, offer.load_per_cpu, -offer.memory_available_mb, offer.node)

        best = min(able, key=rank)
        item = _lease(conn, row, offers[best].node, lease_until, now)
        if item is None:
            continue
        handed[best].append(item)
        slots[best] -= 1
        held[offers[best].node] = held.get(offers[best].node, 0) + 1
    return handed, held


def _lease(
    conn: Connection, row: Row[Any], node: str, lease_until: datetime, now: datetime
) -> WorkItem | None:
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    number = row.leases + 1
    taken = conn.execute(
        update(WORK_ITEMS)
        # Still pending: another orchestrator on the same database may have taken it.
        .where(WORK_ITEMS.c.id == row.id, WORK_ITEMS.c.state == WorkState.PENDING)
        .values(
            state=WorkState.LEASED,
            node=node,
            lease_token=token,
            lease_expires_at=lease_until,
            leases=number,
            updated_at=now,
        )
    ).rowcount
    if not taken:
        return None
    conn.execute(
        insert(WORK_LEASES).values(
            item_id=row.id, number=number, node=node, started_at=now, end=LeaseEnd.HELD
        )
    )
    return WorkItem(
        id=row.id,
        lease_token=token,
        run_id=row.run_id,
        step=row.step_index,
        step_name=row.step_name,
        title=row.title,
        kind=row.kind,
        capability=row.capability,
        params=row.params,
        attempt=row.attempt,
        timeout_s=row.timeout_s,
        results=row.results,
        choice=row.choice,
    )


def _item_row(conn: Connection, item_id: str) -> Row[Any]:
    row = conn.execute(select(WORK_ITEMS).where(WORK_ITEMS.c.id == item_id)).one_or_none()
    if row is None:
        raise UnknownWorkItemError(f"There is no work item {item_id!r}")
    return row


def _held_row(conn: Connection, item_id: str, lease_token: str) -> Row[Any]:
    row = _item_row(conn, item_id)
    if row.state != WorkState.LEASED or row.lease_token != lease_token:
        raise StaleLeaseError(f"The lease on work item {item_id} has ended")
    return row


def _update_held(conn: Connection, row: Row[Any], **values: Any) -> None:
    """Change a held item, unless its lease ended since `row` was read."""
    changed = conn.execute(
        update(WORK_ITEMS)
        # The read and this write are not isolated (SQLite starts the transaction
        # at the write); the condition makes a lease that ended in between count.
        .where(
            WORK_ITEMS.c.id == row.id,
            WORK_ITEMS.c.state == WorkState.LEASED,
            WORK_ITEMS.c.lease_token == row.lease_token,
        )
        .values(**values)
    ).rowcount
    if not changed:
        raise StaleLeaseError(f"The lease on work item {row.id} has ended")


def _renew(conn: Connection, item_id: str, lease_token: str, until: datetime) -> datetime:
    _update_held(conn, _held_row(conn, item_id, lease_token), lease_expires_at=until)
    return until


def _close_lease(conn: Connection, row: Row[Any], end: LeaseEnd, now: datetime) -> None:
    conn.execute(
        update(WORK_LEASES)
        .where(WORK_LEASES.c.item_id == row.id, WORK_LEASES.c.number == row.leases)
        .values(ended_at=now, end=end)
    )


def _finish_item(
    conn: Connection,
    item_id: str,
    lease_token: str,
    *,
    state: WorkState,
    result: dict[str, Any] | None,
    message: str | None,
    retryable: bool,
    now: datetime,
) -> None:
    row = _item_row(conn, item_id)
    if row.state == state and row.lease_token == lease_token:
        # The worker asks again because it missed the answer: it is done already.
        return
    row = _held_row(conn, item_id, lease_token)
    _update_held(
        conn,
        row,
        state=state,
        node=None,
        finished_by=row.node,
        result=result,
        message=message,
        retryable=retryable,
        lease_expires_at=None,
        updated_at=now,
        finished_at=now,
    )
    end = LeaseEnd.COMPLETED if state is WorkState.SUCCEEDED else LeaseEnd.FAILED
    _close_lease(conn, row, end, now)


def _end_lease(
    conn: Connection, item_id: str, lease_token: str, end: LeaseEnd, now: datetime
) -> None:
    _requeue(conn, _held_row(conn, item_id, lease_token), end, now)


def _requeue(conn: Connection, row: Row[Any], end: LeaseEnd, now: datetime) -> None:
    _update_held(
        conn,
        row,
        state=WorkState.PENDING,
        node=None,
        lease_token=None,
        lease_expires_at=None,
        updated_at=now,
    )
    _close_lease(conn, row, end, now)


def _expire_leases(conn: Connection, now: datetime) -> list[tuple[str, str]]:
    rows = conn.execute(
        select(WORK_ITEMS).where(
            WORK_ITEMS.c.state == WorkState.LEASED, WORK_ITEMS.c.lease_expires_at < now
        )
    ).all()
    expired = []
    for row in rows:
        # A heartbeat or a completion since the read keeps the item where it is.
        with contextlib.suppress(StaleLeaseError):
            _requeue(conn, row, LeaseEnd.EXPIRED, now)
            expired.append((row.id, row.node))
    return expired


def _time_out(conn: Connection, item_id: str, timeout_s: float, now: datetime) -> Row[Any]:
    row = _item_row(conn, item_id)
    if row.state in _FINISHED:
        return row
    if row.state == WorkState.LEASED:
        message = f"node {row.node} did not finish the step within {timeout_s:g} s"
    else:
        message = (
            f"no worker with the capability {row.capability!r} took the step within {timeout_s:g} s"
        )
    _fail_unfinished(conn, row, message, LeaseEnd.TIMED_OUT, now)
    return _item_row(conn, item_id)


def _supersede(conn: Connection, run_id: str, index: int, attempt: int, now: datetime) -> None:
    """Fail the unfinished earlier tries of a step: the engine has given up on them."""
    rows = conn.execute(
        select(WORK_ITEMS).where(
            WORK_ITEMS.c.run_id == run_id,
            WORK_ITEMS.c.step_index == index,
            WORK_ITEMS.c.attempt < attempt,
            WORK_ITEMS.c.state.in_((WorkState.PENDING, WorkState.LEASED)),
        )
    ).all()
    for row in rows:
        # A worker still on it gets 409 and stops: it never completes a stale try.
        _fail_unfinished(conn, row, f"superseded by try {attempt}", LeaseEnd.SUPERSEDED, now)


def _fail_unfinished(
    conn: Connection, row: Row[Any], message: str, end: LeaseEnd, now: datetime
) -> None:
    """Fail a pending or held item, unless it moved on since `row` was read."""
    changed = conn.execute(
        update(WORK_ITEMS)
        .where(
            WORK_ITEMS.c.id == row.id,
            WORK_ITEMS.c.state == row.state,
            WORK_ITEMS.c.leases == row.leases,
        )
        .values(
            state=WorkState.FAILED,
            node=None,
            # Its worker's calls now fail as stale: it stops and reports nothing.
            lease_token=None,
            lease_expires_at=None,
            message=message,
            retryable=True,
            updated_at=now,
            finished_at=now,
        )
    ).rowcount
    if changed and row.state == WorkState.LEASED:
        _close_lease(conn, row, end, now)


def _outcome_of(row: Row[Any]) -> WorkOutcome:
    if row.state == WorkState.SUCCEEDED:
        return WorkOutcome(result=row.result or {}, node=row.finished_by)
    raise StepFailedError(row.message or "the worker failed the step", retryable=row.retryable)


def _records(conn: Connection, run_id: str | None) -> list[WorkItemRecord]:
    query = select(WORK_ITEMS).order_by(WORK_ITEMS.c.created_at, WORK_ITEMS.c.id)
    if run_id is not None:
        query = query.where(WORK_ITEMS.c.run_id == run_id)
    items = conn.execute(query).all()
    leases: defaultdict[str, list[LeaseRecord]] = defaultdict(list)
    lease_query = select(WORK_LEASES).order_by(WORK_LEASES.c.item_id, WORK_LEASES.c.number)
    if run_id is not None:
        lease_query = lease_query.where(WORK_LEASES.c.item_id.in_([row.id for row in items]))
    for lease in conn.execute(lease_query):
        leases[lease.item_id].append(
            LeaseRecord(
                number=lease.number,
                node=lease.node,
                started_at=lease.started_at,
                ended_at=lease.ended_at,
                end=lease.end,
            )
        )
    return [
        WorkItemRecord(
            id=row.id,
            run_id=row.run_id,
            step=row.step_index,
            step_name=row.step_name,
            kind=row.kind,
            capability=row.capability,
            attempt=row.attempt,
            state=row.state,
            node=row.node,
            finished_by=row.finished_by,
            result=row.result,
            message=row.message,
            created_at=row.created_at,
            finished_at=row.finished_at,
            leases=leases[row.id],
        )
        for row in items
    ]
