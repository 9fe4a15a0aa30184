"""The run engine on DBOS Transact: each run is a durable workflow in this process.

A run's execution (its first one, or a retry: one "generation") is one DBOS
workflow, id `<run id>` then `<run id>.retry<n>`, enqueued on the DBOS queue of its
template, whose concurrency is the template's quota: runs beyond it wait `queued`.
The workflow reads and writes the run only through `RunStore`, always inside DBOS
steps, so a replay after a crash sees exactly what the first execution saw:

- each try of each step is one DBOS step. A try that completed is never run again;
  a try cut by a crash runs again and counts as a new try (a remote try keeps its
  number, so the work queue finds the same item);
- waits between tries are durable `DBOS.sleep_async`;
- an approval gate loops over a DBOS step that reads the decision from the store and
  `DBOS.recv_async` with an hour's timeout: a run may wait for days, and `decide()`
  or `cancel()` wake it with `DBOS.send_async` once their change is committed. The
  message only wakes the run: the decision is read from the store, so a repeated or
  stale message changes nothing;
- a step whose result has `approval_choices` (a list of names) sets the choices of
  the next gate, for picks only a step can list (CAD variants);
- a cancel sets a flag in the store that the run checks at every step boundary;
- compensations run one DBOS step per try too, in reverse order, and the rollback
  log is written in the step that ends the run.

DBOS is process-global (one instance, one registry, one launch), so every `DBOS.*`
call lives in this module and `DbosEngine.start` / `stop` bracket its life. The
workflow and step functions are closures over the engine, registered at start
under fixed names and dropped with the registry at stop; recovery finds them by
name. A module-level function would have needed a module-level engine, and a
`DBOSConfiguredInstance` a registry entry that outlives `DBOS.destroy()`: closures
keep the engine's state in the engine.
"""

import asyncio
import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
import dataclasses
from dataclasses import dataclass
import functools
import json
import logging
from pathlib import Path
import sqlite3
from typing import Any, Self, cast

from dbos import DBOS, DBOSClient, DBOSConfig, SetWorkflowID
from dbos._error import DBOSException
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from kittyai.contract.orchestrator import (
    ApprovalGate,
    ApprovalRequest,
    ArtifactInfo,
    ArtifactKind,
    CreateRunRequest,
    Decision,
    RunErrorCode,
    RunEvent,
    RunEventType,
    RunInfo,
    RunList,
    RunState,
    RunStats,
    StepInfo,
    StepState,
)
from kittyai.orchestrator.artifacts import ArtifactStore
from kittyai.orchestrator.database import Database, utc_now
from kittyai.orchestrator.engine import RunError
from kittyai.orchestrator.options import QuotaOptions
from kittyai.orchestrator.store import (
    NewRun,
    RunStore,
    results_by_name,
)
from kittyai.orchestrator.templates.base import (
    APPROVAL_CHOICES,
    Peers,
    StepContext,
    StepFailedError,
    Template,
)
from kittyai.orchestrator.workqueue import WorkQueue
from kittyai.validation import describe_errors

_LOGGER = logging.getLogger(__name__)

APP_NAME = "kitty-orchestrator"
# Fixed, not DBOS's hash of the code: DBOS only recovers workflows of its own
# version, and runs started before an upgrade of KITTY must go on after it. Change
# it only with a workflow whose steps no longer replay as recorded.
APPLICATION_VERSION = "kitty-runs-1"
WORKFLOW_NAME = "kitty.run"
WAKE_TOPIC = "kitty.wake"
# A gate re-reads the store this often even without a message.
GATE_RECHECK_S = 3600.0
# How soon a queued run starts and (on SQLite, which has no LISTEN/NOTIFY) a
# waiting run sees its approval. Each template's queue costs a query per poll, a
# waiting run one more.
POLL_S = 0.25
EVENT_PAGE = 500
_STORE_STEP_ATTEMPTS = 6


def workflow_id(run_id: str, generation: int) -> str:
    """Return the DBOS workflow id of a run's generation (0: its first execution)."""
    return run_id if generation == 0 else f"{run_id}.retry{generation}"


def queue_name(template: str) -> str:
    """Return the DBOS queue of a template's runs."""
    return f"kitty-runs-{template}"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Outcome:
    """How one try of a step or a compensation went, as a DBOS step records it."""

    ok: bool
    message: str | None = None
    retryable: bool = True
    # The try did not start: the run is to stop.
    cancelled: bool = False

    def recorded(self) -> dict[str, Any]:
        """Return the outcome as plain data: DBOS pickles step outputs."""
        return dataclasses.asdict(self)

    @classmethod
    def from_recorded(cls, data: Mapping[str, Any]) -> Self:
        """Return the outcome a DBOS step recorded."""
        return cls(**data)


class EventNotifier:
    """Wakes event readers after a commit that added events; none is missed.

    A reader notes `version` before it reads the store and waits with it: a commit
    after that read has raised the version, so the wait returns at once.
    """

    def __init__(self) -> None:
        """Start at version 0."""
        self.version = 0
        self.closed = False
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Record that events may have been added."""
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        """Wake every reader for good: the engine stops."""
        self.closed = True
        self.notify()

    async def wait(self, seen: int) -> None:
        """Return once the version differs from `seen`."""
        if self.version == seen:
            await self._changed.wait()


class DbosEngine:
    """Runs on DBOS Transact; see the module docstring. Create it with `start`."""

    def __init__(
        self,
        *,
        store: RunStore,
        artifacts: ArtifactStore,
        notifier: EventNotifier,
        templates: Mapping[str, Template],
        peers: Peers,
        work_queue: WorkQueue | None,
    ) -> None:
        """Use `start` instead: it launches DBOS around the engine."""
        self._store = store
        self._artifacts = artifacts
        self._notifier = notifier
        self._templates = dict(templates)
        self._peers = peers
        self._work_queue = work_queue
        self._workflow_tasks: set[asyncio.Task[Any]] = set()
        self._stopped = False
        # Set by `_register`: the DBOS workflow and steps, bound to this engine.
        self._workflow: Callable[[str, int], Coroutine[Any, Any, None]]
        self._load_step: Callable[[str], Awaitable[dict[str, Any]]]
        self._store_step: Callable[..., Awaitable[Any]]
        self._try_step: Callable[[str, int, int, int | None], Awaitable[dict[str, Any]]]
        self._undo_step: Callable[[str, int, int], Awaitable[dict[str, Any]]]

    @classmethod
    async def start(
        cls,
        db: Database,
        templates: Mapping[str, Template],
        peers: Peers,
        data_dir: Path,
        quotas: QuotaOptions,
        *,
        work_queue: WorkQueue | None = None,
        poll_s: float = POLL_S,
    ) -> Self:
        """Launch DBOS on `db` and return the engine; runs it had going go on.

        Call it from the event loop the runs should execute on: DBOS schedules the
        recovered and dequeued workflows onto the loop that launched it. Once per
        process at a time; `stop` ends it. `poll_s`: see POLL_S.
        """
        notifier = EventNotifier()
        store = await RunStore.open(db, notifier.notify)
        engine = cls(
            store=store,
            artifacts=ArtifactStore(data_dir, store),
            notifier=notifier,
            templates=templates,
            peers=peers,
            work_queue=work_queue,
        )
        _route_dbos_logs(db.engine_state_url)
        config: DBOSConfig = {
            "name": APP_NAME,
            "system_database_url": db.engine_state_url,
            "application_version": APPLICATION_VERSION,
            "enable_otlp": False,
            "log_level": logging.getLevelName(_dbos_log_level()),
            "notification_listener_polling_interval_sec": poll_s,
            # `_register_queues` has just brought DBOS's tables up to date.
            "run_migrations": False,
        }
        # Quotas are in place before launch, so no recovered or waiting run starts
        # under an old one (and DBOS's queue thread sees the queues at once).
        await asyncio.to_thread(
            _register_queues, db.engine_state_url, engine._templates, quotas, poll_s
        )
        DBOS(config=config)
        try:
            engine._register()
            # Synchronous and brief (the recovery scan); it must run on the loop's
            # thread so DBOS adopts this loop for the workflows.
            DBOS.launch()
            await engine._enqueue_stranded()
        except BaseException:
            await engine.stop()
            raise
        return engine

    async def stop(self) -> None:
        """Stop the workflows where they are (they resume at the next start) and DBOS."""
        if self._stopped:
            return  # DBOS is global: a second stop would end another engine's.
        self._stopped = True
        self._notifier.close()
        tasks = list(self._workflow_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(DBOS.destroy, destroy_registry=True)
        # DBOS made its executor this loop's default one and has just shut it down.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(thread_name_prefix="asyncio")
        )

    @property
    def templates(self) -> Mapping[str, Template]:
        """Return the templates runs can be created from, by name."""
        return self._templates

    # The RunEngine interface.

    async def create(
        self, request: CreateRunRequest, *, correlation_id: str | None = None
    ) -> tuple[RunInfo, bool]:
        """Plan and queue a run; return it and whether it is new (False: same idempotency key)."""
        if request.idempotency_key is not None:
            existing = await self._store.find_by_idempotency_key(request.idempotency_key)
            if existing is not None:
                return existing, False
        template = self._templates.get(request.template)
        if template is None:
            raise RunError(
                RunErrorCode.UNKNOWN_TEMPLATE,
                f"there is no template {request.template}; templates: "
                + ", ".join(sorted(self._templates)),
            )
        try:
            params = template.params_model.model_validate(request.params)
        except ValidationError as err:
            raise RunError(RunErrorCode.INVALID_PARAMS, describe_errors(err)) from None
        steps = await template.plan(params, self._peers)
        run, created = await self._store.create_run(
            NewRun(
                template=template.name,
                params=params.model_dump(mode="json"),
                steps=steps,
                requested_by=request.requested_by,
                idempotency_key=request.idempotency_key,
                correlation_id=correlation_id,
            )
        )
        if created:
            # A crash before this leaves the run queued: `start` enqueues it then.
            await self._enqueue(run.id, run.template, 0)
        return run, created

    async def decide(self, run_id: str, request: ApprovalRequest) -> RunInfo:
        """Record an approval or rejection at the gate the run waits at, and wake the run."""
        run, generation, index = await self._store.decide(run_id, request)
        await self._wake(run_id, generation, f"gate-{index}")
        return run

    async def cancel(self, run_id: str, reason: str | None) -> RunInfo:
        """Cancel a queued run at once, or make a running one stop and undo at its next step."""
        run, generation, must_stop = await self._store.request_cancel(run_id, reason)
        if must_stop:
            await self._wake(run_id, generation, "cancel")
        return run

    async def retry(self, run_id: str, from_step: int | str | None) -> RunInfo:
        """Queue a failed, rolled back or cancelled run again from a step."""
        run, generation = await self._store.prepare_retry(run_id, from_step)
        await self._enqueue(run_id, run.template, generation)
        return run

    async def get(self, run_id: str) -> RunInfo:
        """Return one run."""
        return await self._store.get_run(run_id)

    async def list(
        self,
        *,
        states: frozenset[RunState] = frozenset(),
        template: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> RunList:
        """Return runs, newest first, filtered by state and template."""
        return await self._store.list_runs(
            states=states, template=template, offset=offset, limit=limit
        )

    async def artifacts(self, run_id: str) -> builtins.list[ArtifactInfo]:
        """Return the artifacts of a run, oldest first."""
        return await self._store.artifacts(run_id)

    async def artifact_file(self, run_id: str, artifact_id: str) -> tuple[ArtifactInfo, Path]:
        """Return one artifact and where its file is."""
        return await self._artifacts.file(run_id, artifact_id)

    async def events(self, *, after: int = 0, run_id: str | None = None) -> AsyncIterator[RunEvent]:
        """Yield events with `seq > after`, stored ones first, then new ones; end at `stop`."""
        last = after
        while not self._notifier.closed:
            seen = self._notifier.version
            batch = await self._store.events_after(last, run_id=run_id, limit=EVENT_PAGE)
            for event in batch:
                last = event.seq
                yield event
            if len(batch) < EVENT_PAGE:
                await self._notifier.wait(seen)

    # Beyond the interface: what the service publishes and maintains.

    async def stats(self) -> RunStats:
        """Return active and awaiting runs and the last result, for the sensors."""
        return await self._store.stats()

    async def prune_artifacts(self, retention_days: float) -> int:
        """Remove the files of runs finished over `retention_days` ago; return how many."""
        return await self._artifacts.prune(retention_days)

    # DBOS plumbing.

    async def _enqueue(self, run_id: str, template: str, generation: int) -> None:
        queue = await DBOS.retrieve_queue_async(queue_name(template))
        if queue is None:
            raise RunError(RunErrorCode.UNKNOWN_TEMPLATE, f"there is no template {template}")
        # Enqueueing an id that exists already is a no-op: safe to repeat.
        with SetWorkflowID(workflow_id(run_id, generation)):
            await queue.enqueue_async(self._workflow, run_id, generation)

    async def _enqueue_stranded(self) -> None:
        """Enqueue the queued runs that have no workflow (a crash right after their insert)."""
        for queued in await self._store.queued_runs():
            wanted = workflow_id(queued.run_id, queued.generation)
            if await DBOS.get_workflow_status_async(wanted) is not None:
                continue
            if queued.template not in self._templates:
                await self._store.finish_run(
                    queued.run_id, RunState.FAILED, f"template {queued.template} is gone"
                )
                continue
            _LOGGER.info("Enqueueing run %s, queued before a restart", queued.run_id)
            await self._enqueue(queued.run_id, queued.template, queued.generation)

    async def _wake(self, run_id: str, generation: int, what: str) -> None:
        # The key makes a repeated send deliver once; the run reads the store anyway.
        try:
            await DBOS.send_async(
                workflow_id(run_id, generation),
                what,
                WAKE_TOPIC,
                idempotency_key=f"{workflow_id(run_id, generation)}:{what}",
            )
        except DBOSException:
            # No workflow yet (it is still queued): it reads the store when it starts.
            _LOGGER.debug("No workflow to wake for run %s", run_id, exc_info=True)

    def _register(self) -> None:
        """Register the workflow and its steps with DBOS, bound to this engine.

        DBOS marks the functions it registers, which bound methods do not allow:
        each is a small closure.
        """
        store_step_options = _store_step_retries()

        @DBOS.workflow(name=WORKFLOW_NAME)
        async def run_workflow(run_id: str, generation: int) -> None:
            await self._execute(run_id, generation)

        @DBOS.step(name="kitty.load", **store_step_options)
        async def load(run_id: str) -> dict[str, Any]:
            return await self._load(run_id)

        @DBOS.step(name="kitty.store", **store_step_options)
        async def store_call(operation: str, *args: Any) -> Any:
            return await self._store_call(operation, *args)

        @DBOS.step(name="kitty.try")
        async def try_step(
            run_id: str, index: int, tries: int, remote_attempt: int | None
        ) -> dict[str, Any]:
            return await self._try(run_id, index, tries, remote_attempt)

        @DBOS.step(name="kitty.undo")
        async def undo_step(run_id: str, index: int, tries: int) -> dict[str, Any]:
            return await self._undo(run_id, index, tries)

        self._workflow = run_workflow
        self._load_step = load
        self._store_step = store_call
        self._try_step = try_step
        self._undo_step = undo_step

    # The workflow: plain code between DBOS steps, replayed the same way after a crash.

    async def _execute(self, run_id: str, generation: int) -> None:
        # Tracked to be cancelled at `stop`: DBOS leaves tasks on this loop running.
        task = cast(asyncio.Task[Any], asyncio.current_task())
        if self._stopped:
            # DBOS was starting it as the engine stopped: it stays pending, and the
            # next start recovers it. Cancelled, so DBOS records no outcome.
            raise asyncio.CancelledError
        self._workflow_tasks.add(task)
        try:
            if not await self._store_step("start_generation", run_id, generation):
                return  # Cancelled while queued, or superseded by a retry.
            await self._drive(run_id)
        except DBOSException:
            raise
        except Exception as err:
            _LOGGER.exception("Run %s stopped on an internal error", run_id)
            await self._finish(run_id, RunState.FAILED, f"internal error: {type(err).__name__}")
        finally:
            self._workflow_tasks.discard(task)

    async def _drive(self, run_id: str) -> None:
        run = RunInfo.model_validate(await self._load_step(run_id))
        template = self._templates.get(run.template)
        if template is None:
            await self._finish(run_id, RunState.FAILED, f"template {run.template} is gone")
            return
        for step in run.steps:
            if step.state is StepState.SUCCEEDED:
                continue  # Done by an earlier generation; a retry keeps it.
            # Every step boundary checks for a cancel: the gate, and the try when it starts.
            if step.approval is not None:
                answer = await self._gate(run_id, step.index)
                if answer == "cancel":
                    await self._rollback(
                        run_id, RunState.CANCELLED, await self._cancel_message(run_id)
                    )
                    return
                if answer is not Decision.APPROVE:
                    reloaded = RunInfo.model_validate(await self._load_step(run_id))
                    await self._rollback(run_id, RunState.ROLLED_BACK, reloaded.message)
                    return
            failure = await self._run_tries(run_id, step)
            if failure == "cancel":
                await self._rollback(run_id, RunState.CANCELLED, await self._cancel_message(run_id))
                return
            if failure is not None:
                await self._rollback(run_id, RunState.FAILED, f"step {step.name} failed: {failure}")
                return
        # The end is a step boundary too: a cancel while the last step ran undoes it.
        if await self._store_step("cancel_requested", run_id):
            await self._rollback(run_id, RunState.CANCELLED, await self._cancel_message(run_id))
            return
        await self._finish(run_id, RunState.SUCCEEDED, None)

    async def _gate(self, run_id: str, index: int) -> Decision | str:
        """Wait at step `index`'s gate; return the decision, or "cancel"."""
        await self._store_step("open_gate", run_id, index)
        while True:
            answer = await self._store_step("gate_answer", run_id, index)
            if answer["cancelled"]:
                return "cancel"
            if answer["decision"] is not None:
                return Decision(answer["decision"])
            await DBOS.recv_async(WAKE_TOPIC, timeout_seconds=GATE_RECHECK_S)

    async def _run_tries(self, run_id: str, step: StepInfo) -> str | None:
        """Try `step` until it succeeds or no try is left; return None, the failure, or "cancel"."""
        tries = 0
        while True:
            tries += 1
            if tries > 1:
                await DBOS.sleep_async(step.retry.delay_before(tries))
            # A remote try's number must be the same when it is run again after a
            # crash: the work queue finds its item by it.
            remote_attempt = step.attempts + tries if step.capability is not None else None
            outcome = _Outcome.from_recorded(
                await self._try_step(run_id, step.index, tries, remote_attempt)
            )
            if outcome.cancelled:
                return "cancel"
            if outcome.ok:
                return None
            if not outcome.retryable or tries >= step.retry.attempts:
                return outcome.message or "failed"

    async def _rollback(self, run_id: str, cause: RunState, message: str | None) -> None:
        """Undo the succeeded steps in reverse order, write the rollback log, end the run."""
        run = RunInfo.model_validate(await self._load_step(run_id))
        lines = [f"Rollback of run {run.id} ({run.template}): {message or cause}"]
        undone = failed = 0
        for step in reversed(run.steps):
            if step.state is not StepState.SUCCEEDED or step.compensation is None:
                continue
            outcome = await self._undo_tries(run_id, step)
            if outcome.ok:
                undone += 1
                lines.append(f"step {step.name}: undone by {step.compensation}")
            else:
                failed += 1
                lines.append(
                    f"step {step.name}: undoing with {step.compensation} FAILED: {outcome.message}"
                )
        if not undone and not failed:
            lines.append("Nothing needed undoing: no step that succeeded has a compensation.")
        if cause is RunState.FAILED and undone and not failed:
            state = RunState.ROLLED_BACK
        else:
            state = cause
        if failed:
            message = f"{message}; undoing {failed} step(s) failed" if message else None
        lines.append(f"Run ended {state}.")
        await self._finish(run_id, state, message, rollback_log="\n".join(lines) + "\n")

    async def _undo_tries(self, run_id: str, step: StepInfo) -> _Outcome:
        tries = 0
        while True:
            tries += 1
            if tries > 1:
                await DBOS.sleep_async(step.retry.delay_before(tries))
            outcome = _Outcome.from_recorded(await self._undo_step(run_id, step.index, tries))
            if outcome.ok or not outcome.retryable or tries >= step.retry.attempts:
                return outcome

    async def _finish(
        self, run_id: str, state: RunState, message: str | None, rollback_log: str | None = None
    ) -> None:
        await self._store_step("finish", run_id, state, message, rollback_log)

    async def _cancel_message(self, run_id: str) -> str:
        reason = await self._store_step("cancel_reason", run_id)
        return "cancelled" + (f": {reason}" if reason else "")

    # DBOS steps: each reads or changes the store; their outputs are plain data.

    async def _load(self, run_id: str) -> dict[str, Any]:
        run = await self._store.get_run(run_id)
        return run.model_dump(mode="json")

    async def _store_call(self, operation: str, *args: Any) -> Any:
        """Run the store operation named `operation`: one registered step serves them all."""
        operations: dict[str, Callable[..., Awaitable[Any]]] = {
            "start_generation": self._store.start_generation,
            "cancel_requested": self._store.cancel_requested,
            "cancel_reason": self._store.cancel_reason,
            "open_gate": self._store.open_gate,
            "gate_answer": self._gate_answer,
            "finish": self._finish_now,
        }
        return await operations[operation](*args)

    async def _gate_answer(self, run_id: str, index: int) -> dict[str, Any]:
        answer = await self._store.gate_answer(run_id, index)
        return {
            "decision": None if answer.decision is None else str(answer.decision),
            "cancelled": answer.cancelled,
        }

    async def _finish_now(
        self, run_id: str, state: RunState, message: str | None, rollback_log: str | None
    ) -> None:
        # The files first: a run that reads as ended has all of its artifacts.
        if rollback_log is not None:
            await self._artifacts.write(
                run_id,
                None,
                "rollback.log",
                rollback_log.encode(),
                kind=ArtifactKind.ROLLBACK_LOG,
                media_type="text/plain",
            )
        await self._write_run_log(run_id, state, message)
        await self._store.finish_run(run_id, state, message)

    async def _write_run_log(self, run_id: str, state: RunState, message: str | None) -> None:
        """Write `run.log`: the run's events, then how it is ending."""
        lines: list[str] = []
        after = 0
        while batch := await self._store.events_after(after, run_id=run_id, limit=EVENT_PAGE):
            lines.extend(_log_line(event) for event in batch)
            after = batch[-1].seq
        lines.append(" ".join([utc_now().isoformat(timespec="seconds"), state, *_dash(message)]))
        await self._artifacts.write(
            run_id,
            None,
            "run.log",
            ("\n".join(lines) + "\n").encode(),
            kind=ArtifactKind.LOG,
            media_type="text/plain",
        )

    async def _try(
        self, run_id: str, index: int, tries: int, remote_attempt: int | None
    ) -> dict[str, Any]:
        """One try of step `index`: the executor or a worker; never raises, records everything."""
        run = await self._store.begin_try(run_id, index, attempt=remote_attempt)
        if run is None:
            return _Outcome(ok=False, cancelled=True).recorded()
        step = run.steps[index]
        if step.state is StepState.SUCCEEDED:
            return _Outcome(ok=True).recorded()
        if step.state is StepState.FAILED:
            return _Outcome(ok=False, message=step.message, retryable=False).recorded()
        attempt = step.attempts
        ctx = self._context(run, step, attempt)
        node: str | None = None
        outcome: _Outcome
        try:
            async with asyncio.timeout(step.timeout_s) as deadline:
                if step.capability is not None:
                    result, node = await self._execute_remotely(ctx)
                else:
                    result = await self._execute_here(run.template, step.kind, ctx)
            # Stored as JSON: a result that cannot be is the step's failure.
            result = json.loads(json.dumps(result))
            _check_choices(result)
        except Exception as err:
            outcome = _failure(err, deadline.expired(), step, f"step {index} of run {run_id}")
        else:
            await self._store.step_succeeded(run_id, index, result, node)
            return _Outcome(ok=True).recorded()
        final = not outcome.retryable or tries >= step.retry.attempts
        message = outcome.message or "failed"
        if not final:
            delay = step.retry.delay_before(tries + 1)
            message = f"try {attempt} failed: {message}; next try in {delay:g} s"
        await self._store.try_failed(run_id, index, message, final=final)
        return outcome.recorded()

    async def _undo(self, run_id: str, index: int, tries: int) -> dict[str, Any]:
        """One try of the compensation of step `index`; never raises, records the outcome."""
        run = await self._store.get_run(run_id)
        step = run.steps[index]
        if step.state is StepState.COMPENSATED:
            return _Outcome(ok=True).recorded()  # Undone before a crash lost the record.
        compensation = cast(str, step.compensation)
        await self._store.append_log(run_id, index, f"undoing with {compensation} (try {tries})")
        try:
            async with asyncio.timeout(step.timeout_s) as deadline:
                await self._execute_here(
                    run.template, compensation, self._context(run, step, tries)
                )
        except Exception as err:
            outcome = _failure(
                err, deadline.expired(), step, f"undoing step {index} of run {run_id}"
            )
        else:
            await self._store.compensated(run_id, index, None, ok=True)
            return _Outcome(ok=True).recorded()
        final = not outcome.retryable or tries >= step.retry.attempts
        if final:
            await self._store.compensated(
                run_id, index, f"undoing failed: {outcome.message}", ok=False
            )
        return outcome.recorded()

    def _context(self, run: RunInfo, step: StepInfo, attempt: int) -> StepContext:
        return StepContext(
            run_id=run.id,
            template=run.template,
            params=run.params,
            step=step,
            attempt=attempt,
            results=results_by_name(run),
            choice=_choice(run, step.index),
            peers=self._peers,
            artifacts=self._artifacts.sink(run.id, step.index),
            log=functools.partial(self._store.append_log, run.id, step.index),
        )

    async def _execute_here(self, template: str, kind: str, ctx: StepContext) -> dict[str, Any]:
        executor = self._templates[template].executors.get(kind)
        if executor is None:
            raise StepFailedError(
                f"template {template} has no executor for {kind}", retryable=False
            )
        return await executor(ctx)

    async def _execute_remotely(self, ctx: StepContext) -> tuple[dict[str, Any], str | None]:
        if self._work_queue is None:
            raise StepFailedError("no work queue", retryable=False)
        outcome = await self._work_queue.execute(
            run_id=ctx.run_id,
            step=ctx.step,
            attempt=ctx.attempt,
            log=ctx.log,
            results=ctx.results,
            choice=ctx.choice,
        )
        return outcome.result, outcome.node


def _check_choices(result: Mapping[str, Any]) -> None:
    """Refuse `approval_choices` that are not what a gate can offer."""
    if APPROVAL_CHOICES not in result:
        return
    try:
        ApprovalGate(reason="-", choices=result[APPROVAL_CHOICES])
    except ValidationError as err:
        raise StepFailedError(
            f"{APPROVAL_CHOICES} must be a list of names: {describe_errors(err)}",
            retryable=False,
        ) from None


def _failure(err: Exception, timed_out: bool, step: StepInfo, what: str) -> _Outcome:
    """Return the outcome of a try of `step` that raised `err`."""
    if timed_out and isinstance(err, TimeoutError):
        return _Outcome(ok=False, message=f"timed out after {step.timeout_s:g} s")
    if isinstance(err, StepFailedError):
        return _Outcome(ok=False, message=str(err), retryable=err.retryable)
    if isinstance(err, RunError):
        return _Outcome(ok=False, message=err.message, retryable=False)
    # A bug in an executor, or a result that is not JSON: worth its traceback.
    _LOGGER.error("Unexpected error in %s", what, exc_info=err)
    return _Outcome(ok=False, message=f"{type(err).__name__}: {err}")


def _choice(run: RunInfo, index: int) -> str | None:
    """Return what the approver picked at the last gate at or before step `index`."""
    for approval in reversed(run.approvals):
        if approval.decision is Decision.APPROVE and approval.step <= index:
            return approval.choice
    return None


def _log_line(event: RunEvent) -> str:
    parts = [event.at.isoformat(timespec="seconds")]
    if event.step is not None:
        parts.append(f"step {event.step_name}")
    if event.type is RunEventType.LOG:
        parts.append(event.message or "")
    else:
        parts.append(event.step_state or event.state)
        parts.extend(_dash(event.message))
    return " ".join(parts)


def _dash(message: str | None) -> list[str]:
    return [] if message is None else ["-", message]


def _register_queues(
    system_database_url: str,
    templates: Mapping[str, Template],
    quotas: QuotaOptions,
    poll_s: float,
) -> None:
    """Create DBOS's tables if needed and give each template its queue, at its quota."""
    DBOS.migrate(system_database_url)
    url = make_url(system_database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        # WAL commits with one fsync where DBOS's default journal takes several, and
        # lets DBOS's pollers read while a step writes; the mode stays with the file.
        with closing(sqlite3.connect(url.database)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    client = DBOSClient(system_database_url=system_database_url, application_name=APP_NAME)
    try:
        for name in templates:
            client.register_queue(
                queue_name(name),
                global_concurrency=quotas.limit(name),
                polling_interval_sec=poll_s,
                on_conflict="always_update",
            )
    finally:
        client.destroy()


def _store_step_retries() -> dict[str, Any]:
    """Retry a store step on a database error: a short outage must not fail the run."""
    return {
        "retries_allowed": True,
        "max_attempts": _STORE_STEP_ATTEMPTS,
        "interval_seconds": 1.0,
        "backoff_rate": 2.0,
        "should_retry": lambda err: isinstance(err, DBAPIError),
    }


class _HidePassword(logging.Filter):
    """Takes the system database's password out of DBOS's log records."""

    def __init__(self, password: str) -> None:
        super().__init__()
        self._password = password

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = text.replace(self._password, "***")
        record.args = None
        return True


def _dbos_log_level() -> int:
    """Return DBOS's log level: its info lines are chatter, unless KITTY logs debug."""
    ours = _LOGGER.getEffectiveLevel()
    return ours if ours <= logging.DEBUG else max(ours, logging.WARNING)


def _route_dbos_logs(system_database_url: str) -> None:
    """Send DBOS's log records through KITTY's handlers, without the database password."""
    dbos_logger = logging.getLogger("dbos")
    # DBOS adds its own console handler unless the logger has one already.
    if not dbos_logger.handlers:
        dbos_logger.addHandler(logging.NullHandler())
    dbos_logger.propagate = True
    for existing in [f for f in dbos_logger.filters if isinstance(f, _HidePassword)]:
        dbos_logger.removeFilter(existing)
    password = make_url(system_database_url).password
    if password:
        dbos_logger.addFilter(_HidePassword(str(password)))
