"""Runs, their steps, approvals, events and artifact records, in the orchestrator's database.

The store is the truth about runs: the API reads it, and the engine's workflows
change it through it. Every change of a run or a step is written in one transaction
with the `RunEvent` that reports it, so the event log never claims what did not
happen and never misses what did. Event numbers (`seq`) increase in commit order:
SQLite has one writer at a time, and on PostgreSQL every transaction that appends
events first takes one advisory lock, so a reader that has seen event N never sees
an event below N appear later (an SSE client resuming after N would miss it).

Refusals (unknown run, not awaiting approval, cannot retry, ...) raise `RunError`
from inside the transaction, so nothing of a refused request is written.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
import secrets
from typing import Any, Self

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Connection,
    ForeignKey,
    Index,
    Integer,
    Row,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from kittyai.contract.orchestrator import (
    Approval,
    ApprovalRequest,
    ArtifactInfo,
    ArtifactKind,
    AwaitingRun,
    Decision,
    RunErrorCode,
    RunEvent,
    RunEventType,
    RunInfo,
    RunList,
    RunResult,
    RunState,
    RunStats,
    StepInfo,
    StepSpec,
    StepState,
)
from kittyai.orchestrator.database import METADATA, Database, UtcDateTime, utc_now
from kittyai.orchestrator.engine import RunError
from kittyai.orchestrator.templates.base import APPROVAL_CHOICES

# A step result's list under this key becomes the choices of the next gate: what a
# human picks from is often only known once a step made it (CAD variants).
RUN_ID_PREFIX = "r-"
ARTIFACT_ID_PREFIX = "a-"
_ID_HEX_BYTES = 6
# Any constant: the key of the PostgreSQL advisory lock that orders event numbers.
_EVENT_LOCK_KEY = 0x4B177E
ACTIVE_RUN_STATES = frozenset({RunState.QUEUED, RunState.RUNNING, RunState.AWAITING_APPROVAL})


# BIGINT keys on PostgreSQL; SQLite only auto-numbers a key declared INTEGER.
_SEQ_TYPE = BigInteger().with_variant(Integer(), "sqlite")

RUNS = Table(
    "kitty_runs",
    METADATA,
    Column("id", String(32), primary_key=True),
    Column("template", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("state", String(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("requested_by", String(128)),
    Column("idempotency_key", String(128), unique=True),
    Column("awaiting_step", Integer),
    Column("awaiting_since", UtcDateTime),
    Column("message", Text),
    Column("correlation_id", String(128)),
    # 0 for the first execution; each retry runs the run again as the next generation.
    Column("generation", Integer, nullable=False, default=0),
    # Set by a cancel while the run executes; its workflow stops at the next step boundary.
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("cancel_reason", Text),
    Index("kitty_runs_by_state", "state"),
    Index("kitty_runs_by_template", "template", "created_at"),
    Index("kitty_runs_by_time", "created_at"),
)

STEPS = Table(
    "kitty_run_steps",
    METADATA,
    Column("run_id", String(32), ForeignKey("kitty_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("name", String(64), nullable=False),
    # The StepSpec the template planned, as JSON.
    Column("spec", JSON, nullable=False),
    Column("state", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("message", Text),
    Column("result", JSON),
    Column("node", String(64)),
)

APPROVALS = Table(
    "kitty_run_approvals",
    METADATA,
    Column("id", _SEQ_TYPE, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("kitty_runs.id", ondelete="CASCADE"), nullable=False),
    Column("step", Integer, nullable=False),
    # A retry asks again at the gates it runs through: a decision counts for its generation.
    Column("generation", Integer, nullable=False),
    Column("decision", String(16), nullable=False),
    Column("approver", String(128), nullable=False),
    Column("reason", Text),
    Column("choice", String(128)),
    Column("at", UtcDateTime, nullable=False),
    Index("kitty_run_approvals_by_run", "run_id", "step", "generation"),
    sqlite_autoincrement=True,
)

EVENTS = Table(
    "kitty_run_events",
    METADATA,
    Column("seq", _SEQ_TYPE, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    # The RunEvent without its seq, as JSON.
    Column("payload", JSON, nullable=False),
    Index("kitty_run_events_by_run", "run_id", "seq"),
    # A seq is never reused, even after the newest events were deleted.
    sqlite_autoincrement=True,
)

ARTIFACTS = Table(
    "kitty_artifacts",
    METADATA,
    Column("id", String(32), primary_key=True),
    Column("run_id", String(32), ForeignKey("kitty_runs.id", ondelete="CASCADE"), nullable=False),
    Column("step", Integer),
    Column("name", String(128), nullable=False),
    # The file's name in the run's folder: unique, so writing it again replaces the record.
    Column("file", String(160), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("media_type", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("available", Boolean, nullable=False, default=True),
    UniqueConstraint("run_id", "file", name="kitty_artifacts_file"),
)


def new_run_id() -> str:
    """Return a fresh run id: `r-` and 12 hex digits."""
    return RUN_ID_PREFIX + secrets.token_hex(_ID_HEX_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRun:
    """A planned run, ready to be stored."""

    template: str
    params: dict[str, Any]
    steps: Sequence[StepSpec]
    requested_by: str | None
    idempotency_key: str | None
    correlation_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedRun:
    """A run waiting for its workflow generation to start."""

    run_id: str
    template: str
    generation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GateAnswer:
    """What a workflow waiting at a gate finds: a decision, a cancel, or nothing yet."""

    decision: Decision | None
    cancelled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class NewArtifact:
    """An artifact file that was just written, to be indexed."""

    run_id: str
    step: int | None
    name: str
    file: str
    kind: ArtifactKind
    media_type: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredArtifact:
    """An artifact record and the file name it has in its run's folder."""

    info: ArtifactInfo
    file: str


class RunStore:
    """Reads and writes runs; every write commits its events with it."""

    def __init__(self, db: Database, on_events: Callable[[], None]) -> None:
        """Use `db`; `on_events` is called on the event loop after a commit that added events."""
        self._db = db
        self._on_events = on_events

    @classmethod
    async def open(cls, db: Database, on_events: Callable[[], None]) -> Self:
        """Return the store over `db`, creating its tables if they are missing."""
        await db.transaction(METADATA.create_all)
        return cls(db, on_events)

    async def _write[T](self, work: Callable[[Connection], T]) -> T:
        def locked(connection: Connection) -> T:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _EVENT_LOCK_KEY}
                )
            return work(connection)

        try:
            return await self._db.transaction(locked)
        finally:
            # Also after a refusal: cheap, and a listener only re-reads.
            self._on_events()

    # Runs.

    async def create_run(self, run: NewRun) -> tuple[RunInfo, bool]:
        """Store a new queued run and return it with True; False: its idempotency key's run."""
        if run.idempotency_key is not None:
            existing = await self.find_by_idempotency_key(run.idempotency_key)
            if existing is not None:
                return existing, False
        try:
            return await self._write(lambda connection: (_insert_run(connection, run), True))
        except IntegrityError:
            # Another request with the same key won the race.
            if run.idempotency_key is None:
                raise
            existing = await self.find_by_idempotency_key(run.idempotency_key)
            if existing is None:
                raise
            return existing, False

    async def find_by_idempotency_key(self, key: str) -> RunInfo | None:
        """Return the run created with idempotency key `key`, if any."""

        def work(connection: Connection) -> RunInfo | None:
            row = connection.execute(select(RUNS).where(RUNS.c.idempotency_key == key)).first()
            return None if row is None else _run_infos(connection, [row])[0]

        return await self._db.transaction(work)

    async def get_run(self, run_id: str) -> RunInfo:
        """Return one run; RunError RUN_NOT_FOUND if there is none."""
        return await self._db.transaction(
            lambda connection: _run_infos(connection, [_run_row(connection, run_id)])[0]
        )

    async def list_runs(
        self,
        *,
        states: frozenset[RunState] = frozenset(),
        template: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> RunList:
        """Return a page of runs, newest first, with the number of all that match."""

        def work(connection: Connection) -> RunList:
            conditions: list[ColumnElement[bool]] = []
            if states:
                conditions.append(RUNS.c.state.in_(sorted(states)))
            if template is not None:
                conditions.append(RUNS.c.template == template)
            where = and_(True, *conditions)
            total = connection.execute(
                select(func.count()).select_from(RUNS).where(where)
            ).scalar_one()
            rows = connection.execute(
                select(RUNS)
                .where(where)
                .order_by(RUNS.c.created_at.desc(), RUNS.c.id.desc())
                .offset(offset)
                .limit(limit)
            ).all()
            runs = _run_infos(connection, rows)
            following = offset + len(runs)
            return RunList(
                runs=runs, total=total, next_offset=following if following < total else None
            )

        return await self._db.transaction(work)

    async def queued_runs(self) -> list[QueuedRun]:
        """Return the runs waiting to start, oldest first."""
        rows = await self._db.transaction(
            lambda connection: connection.execute(
                select(RUNS.c.id, RUNS.c.template, RUNS.c.generation)
                .where(RUNS.c.state == RunState.QUEUED)
                .order_by(RUNS.c.created_at)
            ).all()
        )
        return [
            QueuedRun(run_id=row.id, template=row.template, generation=row.generation)
            for row in rows
        ]

    async def stats(self) -> RunStats:
        """Return what the Home Assistant sensors show: active, awaiting and the last result."""

        def work(connection: Connection) -> RunStats:
            total = connection.execute(select(func.count()).select_from(RUNS)).scalar_one()
            active = connection.execute(
                select(func.count())
                .select_from(RUNS)
                .where(RUNS.c.state.in_(sorted(ACTIVE_RUN_STATES)))
            ).scalar_one()
            awaiting = connection.execute(
                select(RUNS.c.id, RUNS.c.template, RUNS.c.awaiting_since, STEPS.c.idx, STEPS.c.spec)
                .join(STEPS, and_(STEPS.c.run_id == RUNS.c.id, STEPS.c.idx == RUNS.c.awaiting_step))
                .where(RUNS.c.state == RunState.AWAITING_APPROVAL)
                .order_by(RUNS.c.awaiting_since)
            ).all()
            last = connection.execute(
                select(RUNS)
                .where(RUNS.c.finished_at.is_not(None))
                .order_by(RUNS.c.finished_at.desc())
                .limit(1)
            ).first()
            return RunStats(
                active=active,
                awaiting_approval=[_awaiting_run(row) for row in awaiting],
                last_result=None
                if last is None
                else RunResult(
                    run_id=last.id,
                    template=last.template,
                    state=RunState(last.state),
                    finished_at=last.finished_at,
                    message=last.message,
                ),
                total=total,
            )

        return await self._db.transaction(work)

    # What a run's workflow does.

    async def start_generation(self, run_id: str, generation: int) -> bool:
        """Move a queued run into `running` for `generation`; False if the run is not its.

        Started already (a replay after a crash) is True too; a run that ended (a cancel
        while it was queued) or went on to a later generation (a retry) is False.
        """

        def work(connection: Connection) -> bool:
            row = _run_row(connection, run_id)
            if row.generation != generation or RunState(row.state).finished:
                return False
            if row.state == RunState.QUEUED:
                row = _set_run(connection, run_id, state=RunState.RUNNING, message=None)
                _append_event(connection, row, RunEventType.RUN)
            return True

        return await self._write(work)

    async def cancel_requested(self, run_id: str) -> bool:
        """Return whether a cancel waits for the run's workflow to stop."""
        return bool(
            await self._db.transaction(
                lambda connection: connection.execute(
                    select(RUNS.c.cancel_requested).where(RUNS.c.id == run_id)
                ).scalar_one()
            )
        )

    async def open_gate(self, run_id: str, index: int) -> None:
        """Make the run wait for approval before step `index`, unless it does or was answered."""

        def work(connection: Connection) -> None:
            row = _run_row(connection, run_id)
            if row.awaiting_step == index or _decision(connection, row, index) is not None:
                return  # A replay after a crash: the gate was opened, maybe answered.
            now = utc_now()
            step = _set_step(connection, run_id, index, state=StepState.AWAITING_APPROVAL)
            row = _set_run(
                connection,
                run_id,
                state=RunState.AWAITING_APPROVAL,
                awaiting_step=index,
                awaiting_since=now,
            )
            gate = StepSpec.model_validate(step.spec).approval
            _append_event(connection, row, RunEventType.STEP, step=step)
            _append_event(
                connection, row, RunEventType.RUN, message=None if gate is None else gate.reason
            )

        await self._write(work)

    async def decide(self, run_id: str, request: ApprovalRequest) -> tuple[RunInfo, int, int]:
        """Record a decision at the gate the run waits at, and let the run go on.

        Return the run, its generation and the gate's step. Raises RunError
        NOT_AWAITING_APPROVAL, INVALID_CHOICE or RUN_NOT_FOUND.
        """

        def work(connection: Connection) -> tuple[RunInfo, int, int]:
            row = _run_row(connection, run_id)
            if row.state != RunState.AWAITING_APPROVAL or row.awaiting_step is None:
                raise RunError(
                    RunErrorCode.NOT_AWAITING_APPROVAL,
                    f"run {run_id} is {row.state}, not awaiting approval",
                )
            index: int = row.awaiting_step
            step = _step_row(connection, run_id, index)
            spec = StepSpec.model_validate(step.spec)
            choices = spec.approval.choices if spec.approval is not None else []
            choice = request.choice
            if request.decision is Decision.APPROVE and choices and choice not in choices:
                raise RunError(
                    RunErrorCode.INVALID_CHOICE,
                    f"pick one of {', '.join(choices)} to approve step {index} ({step.name})",
                )
            if request.decision is Decision.APPROVE and not choices and choice is not None:
                raise RunError(
                    RunErrorCode.INVALID_CHOICE,
                    f"step {index} ({step.name}) offers no choices",
                )
            now = utc_now()
            connection.execute(
                insert(APPROVALS).values(
                    run_id=run_id,
                    step=index,
                    generation=row.generation,
                    decision=request.decision,
                    approver=request.approver,
                    reason=request.reason,
                    choice=choice if request.decision is Decision.APPROVE else None,
                    at=now,
                )
            )
            verb = "approved" if request.decision is Decision.APPROVE else "rejected"
            message = f"{verb} by {request.approver}"
            if choice is not None and request.decision is Decision.APPROVE:
                message += f", choice {choice}"
            if request.reason:
                message += f": {request.reason}"
            step = _set_step(connection, run_id, index, state=StepState.PENDING, message=message)
            row = _set_run(
                connection,
                run_id,
                state=RunState.RUNNING,
                awaiting_step=None,
                awaiting_since=None,
                message=message,
            )
            _append_event(connection, row, RunEventType.STEP, step=step, message=message)
            _append_event(connection, row, RunEventType.RUN, message=message)
            return _run_infos(connection, [row])[0], row.generation, index

        return await self._write(work)

    async def gate_answer(self, run_id: str, index: int) -> GateAnswer:
        """Return the decision at step `index`'s gate in this generation, or a pending cancel."""

        def work(connection: Connection) -> GateAnswer:
            row = _run_row(connection, run_id)
            approval = _decision(connection, row, index)
            return GateAnswer(
                decision=None if approval is None else Decision(approval.decision),
                cancelled=bool(row.cancel_requested),
            )

        return await self._db.transaction(work)

    async def begin_try(
        self, run_id: str, index: int, *, attempt: int | None = None
    ) -> RunInfo | None:
        """Mark step `index` running for a new try and return the run; None if it is cancelled.

        The step's `attempts` is the try's number (1 for the first). `attempt` None
        counts one more try than recorded (a try cut by a crash counts); a number is
        recorded as it is (the same remote try, found again). A step that succeeded
        or failed for good is returned as it is: a crash lost only DBOS's record of it.
        """

        def work(connection: Connection) -> RunInfo | None:
            row = _run_row(connection, run_id)
            current = _step_row(connection, run_id, index)
            if current.state in {StepState.SUCCEEDED, StepState.FAILED}:
                return _run_infos(connection, [row])[0]
            if row.cancel_requested:
                return None
            number: int = (
                current.attempts + 1 if attempt is None else max(current.attempts, attempt)
            )
            step = _set_step(
                connection,
                run_id,
                index,
                state=StepState.RUNNING,
                attempts=number,
                started_at=utc_now(),
                finished_at=None,
                message=None,
            )
            row = _set_run(connection, run_id)
            _append_event(connection, row, RunEventType.STEP, step=step, message=f"try {number}")
            return _run_infos(connection, [row])[0]

        return await self._write(work)

    async def step_succeeded(
        self, run_id: str, index: int, result: dict[str, Any], node: str | None
    ) -> None:
        """Record step `index`'s result; its `approval_choices` become the next gate's choices."""

        def work(connection: Connection) -> None:
            step = _set_step(
                connection,
                run_id,
                index,
                state=StepState.SUCCEEDED,
                finished_at=utc_now(),
                result=result,
                node=node,
                message=None,
            )
            if APPROVAL_CHOICES in result:
                _offer_choices(connection, run_id, index, list(result[APPROVAL_CHOICES]))
            _append_event(connection, _set_run(connection, run_id), RunEventType.STEP, step=step)

        await self._write(work)

    async def try_failed(self, run_id: str, index: int, message: str, *, final: bool) -> None:
        """Record a failed try of step `index`; `final` when no try is left."""

        def work(connection: Connection) -> None:
            step = _set_step(
                connection,
                run_id,
                index,
                state=StepState.FAILED if final else StepState.RUNNING,
                finished_at=utc_now() if final else None,
                message=message,
            )
            _append_event(
                connection,
                _set_run(connection, run_id, message=message if final else None),
                RunEventType.STEP,
                step=step,
                message=message,
            )

        await self._write(work)

    async def compensated(self, run_id: str, index: int, message: str | None, *, ok: bool) -> None:
        """Record how undoing step `index` went: `compensated`, or still succeeded with why not."""

        def work(connection: Connection) -> None:
            current = _step_row(connection, run_id, index)
            step = _set_step(
                connection,
                run_id,
                index,
                state=StepState.COMPENSATED if ok else StepState(current.state),
                message=message,
            )
            _append_event(
                connection,
                _set_run(connection, run_id),
                RunEventType.STEP,
                step=step,
                message=message,
            )

        await self._write(work)

    async def finish_run(self, run_id: str, state: RunState, message: str | None) -> RunInfo:
        """End the run in `state` (a finished one); steps it never reached become `skipped`."""

        def work(connection: Connection) -> RunInfo:
            return _finish(connection, run_id, state, message)

        return await self._write(work)

    async def append_log(self, run_id: str, index: int | None, line: str) -> None:
        """Append a log line of the run (of step `index`, if given) as a `log` event."""

        def work(connection: Connection) -> None:
            row = _run_row(connection, run_id)
            step = None if index is None else _step_row(connection, run_id, index)
            _append_event(connection, row, RunEventType.LOG, step=step, message=line, log=True)

        await self._write(work)

    # Requests on a run.

    async def request_cancel(self, run_id: str, reason: str | None) -> tuple[RunInfo, int, bool]:
        """Cancel a run; return it, its generation and whether its workflow has to stop and undo.

        A queued run is cancelled at once (False); a running or awaiting one gets the
        cancel flag (True). Raises RunError ALREADY_FINISHED or RUN_NOT_FOUND.
        """
        message = "cancelled" + (f": {reason}" if reason else "")

        def work(connection: Connection) -> tuple[RunInfo, int, bool]:
            row = _run_row(connection, run_id)
            state = RunState(row.state)
            if state.finished:
                raise RunError(RunErrorCode.ALREADY_FINISHED, f"run {run_id} already ended {state}")
            if state is RunState.QUEUED:
                return (
                    _finish(connection, run_id, RunState.CANCELLED, message),
                    row.generation,
                    False,
                )
            row = _set_run(connection, run_id, cancel_requested=True, cancel_reason=reason)
            _append_event(connection, row, RunEventType.LOG, message="cancel requested", log=True)
            return _run_infos(connection, [row])[0], row.generation, True

        return await self._write(work)

    async def cancel_reason(self, run_id: str) -> str | None:
        """Return the reason given with the cancel of the run."""
        return await self._db.transaction(
            lambda connection: connection.execute(
                select(RUNS.c.cancel_reason).where(RUNS.c.id == run_id)
            ).scalar_one()
        )

    async def prepare_retry(self, run_id: str, from_step: int | str | None) -> tuple[RunInfo, int]:
        """Queue a finished, unsuccessful run again from a step; return it and its new generation.

        Raises RunError CANNOT_RETRY (with the step to retry from instead) or RUN_NOT_FOUND.
        """

        def work(connection: Connection) -> tuple[RunInfo, int]:
            row = _run_row(connection, run_id)
            if row.state not in {RunState.FAILED, RunState.ROLLED_BACK, RunState.CANCELLED}:
                raise RunError(
                    RunErrorCode.CANNOT_RETRY,
                    f"run {run_id} is {row.state}: only failed, rolled back or cancelled runs"
                    " can be retried",
                )
            steps = connection.execute(
                select(STEPS).where(STEPS.c.run_id == run_id).order_by(STEPS.c.idx)
            ).all()
            latest = next(
                (step.idx for step in steps if step.state != StepState.SUCCEEDED), len(steps)
            )
            index = _resolve_step(steps, from_step, latest)
            if index > latest:
                step = steps[latest]
                raise RunError(
                    RunErrorCode.CANNOT_RETRY,
                    f"step {latest} ({step.name}) is {step.state}: retry from step {latest}"
                    " or an earlier one",
                )
            for step in steps[index:]:
                _set_step(
                    connection,
                    run_id,
                    step.idx,
                    state=StepState.PENDING,
                    started_at=None,
                    finished_at=None,
                    message=None,
                    result=None,
                    node=None,
                )
            generation = row.generation + 1
            row = _set_run(
                connection,
                run_id,
                state=RunState.QUEUED,
                generation=generation,
                finished_at=None,
                awaiting_step=None,
                awaiting_since=None,
                cancel_requested=False,
                cancel_reason=None,
                message=f"retry from step {index} ({steps[index].name})"
                if index < len(steps)
                else "retry",
            )
            _append_event(connection, row, RunEventType.RUN)
            return _run_infos(connection, [row])[0], generation

        return await self._write(work)

    # Events.

    async def events_after(
        self, after: int, *, run_id: str | None = None, limit: int = 500
    ) -> list[RunEvent]:
        """Return up to `limit` stored events with `seq > after`, oldest first."""

        def work(connection: Connection) -> list[RunEvent]:
            query = select(EVENTS).where(EVENTS.c.seq > after)
            if run_id is not None:
                query = query.where(EVENTS.c.run_id == run_id)
            rows = connection.execute(query.order_by(EVENTS.c.seq).limit(limit)).all()
            return [RunEvent.model_validate({**row.payload, "seq": row.seq}) for row in rows]

        return await self._db.transaction(work)

    # Artifacts.

    async def put_artifact(self, artifact: NewArtifact) -> ArtifactInfo:
        """Index an artifact file; writing the same file again replaces its record."""

        def work(connection: Connection) -> ArtifactInfo:
            _run_row(connection, artifact.run_id)
            values = {
                "step": artifact.step,
                "name": artifact.name,
                "kind": artifact.kind,
                "media_type": artifact.media_type,
                "size": artifact.size,
                "sha256": artifact.sha256,
                "created_at": utc_now(),
                "available": True,
            }
            existing = connection.execute(
                select(ARTIFACTS.c.id).where(
                    ARTIFACTS.c.run_id == artifact.run_id, ARTIFACTS.c.file == artifact.file
                )
            ).scalar_one_or_none()
            if existing is None:
                existing = ARTIFACT_ID_PREFIX + secrets.token_hex(_ID_HEX_BYTES)
                connection.execute(
                    insert(ARTIFACTS).values(
                        id=existing, run_id=artifact.run_id, file=artifact.file, **values
                    )
                )
            else:
                connection.execute(
                    update(ARTIFACTS).where(ARTIFACTS.c.id == existing).values(**values)
                )
            row = connection.execute(select(ARTIFACTS).where(ARTIFACTS.c.id == existing)).one()
            return _artifact_info(row)

        return await self._db.transaction(work)

    async def artifacts(self, run_id: str) -> list[ArtifactInfo]:
        """Return the artifacts of a run, oldest first; RunError RUN_NOT_FOUND without a run."""

        def work(connection: Connection) -> list[ArtifactInfo]:
            _run_row(connection, run_id)
            rows = connection.execute(
                select(ARTIFACTS)
                .where(ARTIFACTS.c.run_id == run_id)
                .order_by(ARTIFACTS.c.created_at, ARTIFACTS.c.id)
            ).all()
            return [_artifact_info(row) for row in rows]

        return await self._db.transaction(work)

    async def artifact(self, run_id: str, artifact_id: str) -> StoredArtifact:
        """Return one artifact of a run; RunError ARTIFACT_NOT_FOUND if the run has no such one."""

        def work(connection: Connection) -> StoredArtifact:
            row = connection.execute(
                select(ARTIFACTS).where(ARTIFACTS.c.id == artifact_id, ARTIFACTS.c.run_id == run_id)
            ).first()
            if row is None:
                raise RunError(
                    RunErrorCode.ARTIFACT_NOT_FOUND, f"run {run_id} has no artifact {artifact_id}"
                )
            return StoredArtifact(info=_artifact_info(row), file=row.file)

        return await self._db.transaction(work)

    async def expired_artifacts(self, finished_before: datetime) -> list[StoredArtifact]:
        """Return the available artifacts of runs that finished before `finished_before`."""

        def work(connection: Connection) -> list[StoredArtifact]:
            rows = connection.execute(
                select(ARTIFACTS)
                .join(RUNS, RUNS.c.id == ARTIFACTS.c.run_id)
                .where(
                    ARTIFACTS.c.available.is_(True),
                    RUNS.c.finished_at.is_not(None),
                    RUNS.c.finished_at < finished_before,
                )
            ).all()
            return [StoredArtifact(info=_artifact_info(row), file=row.file) for row in rows]

        return await self._db.transaction(work)

    async def mark_unavailable(self, artifact_ids: Iterable[str]) -> None:
        """Record that the files of these artifacts were removed."""
        ids = list(artifact_ids)
        if not ids:
            return
        await self._db.transaction(
            lambda connection: connection.execute(
                update(ARTIFACTS).where(ARTIFACTS.c.id.in_(ids)).values(available=False)
            )
        )


# Transaction helpers: each takes the open connection.


def _insert_run(connection: Connection, run: NewRun) -> RunInfo:
    now = utc_now()
    run_id = new_run_id()
    connection.execute(
        insert(RUNS).values(
            id=run_id,
            template=run.template,
            params=run.params,
            state=RunState.QUEUED,
            created_at=now,
            updated_at=now,
            requested_by=run.requested_by,
            idempotency_key=run.idempotency_key,
            correlation_id=run.correlation_id,
            generation=0,
            cancel_requested=False,
        )
    )
    connection.execute(
        insert(STEPS),
        [
            {
                "run_id": run_id,
                "idx": index,
                "name": spec.name,
                "spec": spec.model_dump(mode="json"),
                "state": StepState.PENDING,
                "attempts": 0,
            }
            for index, spec in enumerate(run.steps)
        ],
    )
    row = _run_row(connection, run_id)
    _append_event(connection, row, RunEventType.RUN)
    return _run_infos(connection, [row])[0]


def _finish(connection: Connection, run_id: str, state: RunState, message: str | None) -> RunInfo:
    current = _run_row(connection, run_id)
    if RunState(current.state).finished:
        # Ended already: a finishing step that ran again after a crash changes nothing.
        return _run_infos(connection, [current])[0]
    now = utc_now()
    unreached = connection.execute(
        select(STEPS)
        .where(
            STEPS.c.run_id == run_id,
            STEPS.c.state.in_([StepState.PENDING, StepState.AWAITING_APPROVAL, StepState.RUNNING]),
        )
        .order_by(STEPS.c.idx)
    ).all()
    row = _set_run(
        connection,
        run_id,
        state=state,
        finished_at=now,
        awaiting_step=None,
        awaiting_since=None,
        cancel_requested=False,
        message=message,
    )
    for step in unreached:
        # A try a cancel cut short never finished: it did not run to the end either.
        skipped = _set_step(connection, run_id, step.idx, state=StepState.SKIPPED, finished_at=now)
        _append_event(connection, row, RunEventType.STEP, step=skipped)
    _append_event(connection, row, RunEventType.RUN, message=message)
    return _run_infos(connection, [row])[0]


def _offer_choices(connection: Connection, run_id: str, after: int, choices: list[str]) -> None:
    """Make `choices` what the first gate after step `after` offers."""
    gates = connection.execute(
        select(STEPS).where(STEPS.c.run_id == run_id, STEPS.c.idx > after).order_by(STEPS.c.idx)
    ).all()
    for step in gates:
        spec = StepSpec.model_validate(step.spec)
        if spec.approval is not None:
            gate = spec.approval.model_copy(update={"choices": choices})
            changed = spec.model_copy(update={"approval": gate})
            _set_step(connection, run_id, step.idx, spec=changed.model_dump(mode="json"))
            return


def _decision(connection: Connection, run: Row[Any], index: int) -> Row[Any] | None:
    """Return the decision at step `index`'s gate in the run's generation, if any."""
    return connection.execute(
        select(APPROVALS)
        .where(
            APPROVALS.c.run_id == run.id,
            APPROVALS.c.step == index,
            APPROVALS.c.generation == run.generation,
        )
        .order_by(APPROVALS.c.id.desc())
        .limit(1)
    ).first()


def _run_row(connection: Connection, run_id: str) -> Row[Any]:
    row = connection.execute(select(RUNS).where(RUNS.c.id == run_id)).first()
    if row is None:
        raise RunError(RunErrorCode.RUN_NOT_FOUND, f"there is no run {run_id}")
    return row


def _step_row(connection: Connection, run_id: str, index: int) -> Row[Any]:
    return connection.execute(
        select(STEPS).where(STEPS.c.run_id == run_id, STEPS.c.idx == index)
    ).one()


def _set_run(connection: Connection, run_id: str, **values: Any) -> Row[Any]:
    row = connection.execute(
        update(RUNS)
        .where(RUNS.c.id == run_id)
        .values(updated_at=utc_now(), **values)
        .returning(*RUNS.c)
    ).first()
    if row is None:
        raise RunError(RunErrorCode.RUN_NOT_FOUND, f"there is no run {run_id}")
    return row


def _set_step(connection: Connection, run_id: str, index: int, **values: Any) -> Row[Any]:
    return connection.execute(
        update(STEPS)
        .where(STEPS.c.run_id == run_id, STEPS.c.idx == index)
        .values(**values)
        .returning(*STEPS.c)
    ).one()


def _append_event(
    connection: Connection,
    run: Row[Any],
    type_: RunEventType,
    *,
    step: Row[Any] | None = None,
    message: str | None = None,
    log: bool = False,
) -> None:
    payload: dict[str, Any] = {
        "v": 1,
        "run_id": run.id,
        "template": run.template,
        "type": type_,
        "at": utc_now().isoformat(),
        "state": run.state,
        "message": message if message is not None or step is None or log else step.message,
        "correlation_id": run.correlation_id,
    }
    if step is not None:
        payload |= {"step": step.idx, "step_name": step.name}
        if not log:
            payload["step_state"] = step.state
    connection.execute(insert(EVENTS).values(run_id=run.id, payload=payload))


def _resolve_step(steps: Sequence[Row[Any]], wanted: int | str | None, default: int) -> int:
    if wanted is None:
        return default
    for step in steps:
        if wanted in (step.idx, step.name):
            return int(step.idx)
    raise RunError(RunErrorCode.CANNOT_RETRY, f"the run has no step {wanted}")


def _run_infos(connection: Connection, rows: Sequence[Row[Any]]) -> list[RunInfo]:
    if not rows:
        return []
    ids = [row.id for row in rows]
    steps: dict[str, list[Row[Any]]] = {run_id: [] for run_id in ids}
    for step in connection.execute(
        select(STEPS).where(STEPS.c.run_id.in_(ids)).order_by(STEPS.c.idx)
    ):
        steps[step.run_id].append(step)
    approvals: dict[str, list[Approval]] = {run_id: [] for run_id in ids}
    for approval in connection.execute(
        select(APPROVALS).where(APPROVALS.c.run_id.in_(ids)).order_by(APPROVALS.c.id)
    ):
        approvals[approval.run_id].append(
            Approval(
                step=approval.step,
                decision=Decision(approval.decision),
                approver=approval.approver,
                reason=approval.reason,
                choice=approval.choice,
                at=approval.at,
            )
        )
    artifacts: dict[tuple[str, int], list[str]] = {}
    for artifact in connection.execute(
        select(ARTIFACTS.c.id, ARTIFACTS.c.run_id, ARTIFACTS.c.step)
        .where(ARTIFACTS.c.run_id.in_(ids), ARTIFACTS.c.step.is_not(None))
        .order_by(ARTIFACTS.c.created_at, ARTIFACTS.c.id)
    ):
        artifacts.setdefault((artifact.run_id, artifact.step), []).append(artifact.id)
    return [
        RunInfo(
            id=row.id,
            template=row.template,
            params=row.params,
            state=RunState(row.state),
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
            requested_by=row.requested_by,
            idempotency_key=row.idempotency_key,
            awaiting_step=row.awaiting_step,
            message=row.message,
            steps=[
                _step_info(step, artifacts.get((row.id, step.idx), [])) for step in steps[row.id]
            ],
            approvals=approvals[row.id],
        )
        for row in rows
    ]


def _step_info(row: Row[Any], artifacts: list[str]) -> StepInfo:
    return StepInfo(
        **row.spec,
        index=row.idx,
        state=StepState(row.state),
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
        message=row.message,
        result=row.result,
        artifacts=artifacts,
        node=row.node,
    )


def _awaiting_run(row: Row[Any]) -> AwaitingRun:
    spec = StepSpec.model_validate(row.spec)
    gate = spec.approval
    return AwaitingRun(
        run_id=row.id,
        template=row.template,
        step=row.idx,
        title=spec.title,
        reason=gate.reason if gate is not None else spec.title,
        choices=list(gate.choices) if gate is not None else [],
        since=row.awaiting_since,
    )


def _artifact_info(row: Row[Any]) -> ArtifactInfo:
    return ArtifactInfo(
        id=row.id,
        run_id=row.run_id,
        step=row.step,
        name=row.name,
        kind=ArtifactKind(row.kind),
        media_type=row.media_type,
        size=row.size,
        sha256=row.sha256,
        created_at=row.created_at,
        available=row.available,
    )


def results_by_name(run: RunInfo) -> Mapping[str, Mapping[str, Any]]:
    """Return the results of the run's succeeded steps, by step name."""
    return {step.name: step.result or {} for step in run.steps if step.state is StepState.SUCCEEDED}
