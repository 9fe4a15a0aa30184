"""The worker process: claim work, run it under a kept lease, report, heartbeat capacity.

The loop asks the orchestrator for as many items as it has free slots (a long
poll), runs each in a task while it renews the item's lease, and reports the
result or the failure. When the orchestrator is away it retries with capped
backoff, reports included. A lease the orchestrator says has ended stops the
item's work at once: another node runs it now.

The capacity goes out retained on `kitty/nodes/<id>/capacity` every
`heartbeat_s` and whenever a job starts or ends; the last will, and a clean stop,
say `online: false`. On SIGTERM the worker stops claiming, gives running items
`stop_grace_s` to finish, gives the rest back to the queue, and publishes offline.
"""

import argparse
import asyncio
from collections.abc import Sequence
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
import logging
from pathlib import Path
import signal
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from kittyai.backoff import Backoff
from kittyai.catalog import ServiceName
from kittyai.contract import NODE_CAPACITY
from kittyai.contract.orchestrator import NodeCapacity
from kittyai.logs import SecretRedactor, configure_logging
from kittyai.mqtt import BrokerConfig, MqttLink, Presence
from kittyai.validation import describe_errors
from kittyai.worker.client import (
    LeaseLostError,
    OrchestratorUnavailableError,
    WorkClient,
    WorkRequestError,
)
from kittyai.worker.kinds import (
    KINDS,
    CapabilityError,
    WorkContext,
    WorkFailedError,
    check_capabilities,
)
from kittyai.worker.machine import cpu_count, load_1m, memory_available_mb
from kittyai.worker.options import WorkerOptions, node_id_of
from kittyai.worker.protocol import DEFAULT_CLAIM_WAIT_S, WorkItem

_LOGGER = logging.getLogger(__name__)

DEFAULT_OPTIONS_PATH = Path("/data/options.json")
DEFAULT_DATA_DIR = Path("/data")
# Heartbeats per lease: two can be lost before the lease runs out.
# The `service` of the worker's log lines.
WORKER_LOG_NAME = "worker"
HEARTBEATS_PER_LEASE = 3
# Until the first claim answers with the orchestrator's lease timeout.
_ASSUMED_LEASE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: dict[str, Any] | None = None
    failure: WorkFailedError | None = None


class Worker:
    """One worker node: its claims, its running jobs and its heartbeats."""

    def __init__(
        self,
        options: WorkerOptions,
        *,
        node_id: str,
        client: WorkClient,
        broker: BrokerConfig | None,
    ) -> None:
        """Prepare the worker; nothing runs until `run`."""
        self._options = options
        self.node_id = node_id
        self._client = client
        self._backoff = Backoff()
        self._jobs: dict[asyncio.Task[None], WorkItem] = {}
        self._job_ended = asyncio.Event()
        self._lease_timeout_s = _ASSUMED_LEASE_TIMEOUT_S
        self._capacity_topic = NODE_CAPACITY.topic_for(node_id=node_id)
        self._mqtt = MqttLink(
            ServiceName.ORCHESTRATOR,
            broker,
            client_id=f"kitty-worker-{node_id}",
            # Nothing serves a worker's metrics; the link needs somewhere to count.
            registry=CollectorRegistry(),
            presence=Presence(
                topic=self._capacity_topic,
                online=None,
                offline=lambda: self._capacity(online=False),
                qos=NODE_CAPACITY.qos,
            ),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then wind down as the module docstring says."""
        self._publish_capacity()
        self._mqtt.start()
        heartbeat = asyncio.create_task(self._heartbeat_capacity(), name="kitty-worker-capacity")
        claiming = asyncio.create_task(self._claim_forever(), name="kitty-worker-claims")
        _LOGGER.info(
            "Worker %s runs %s for %s with up to %d jobs",
            self.node_id,
            ", ".join(self._options.capabilities),
            self._client.url,
            self._options.max_jobs,
        )
        try:
            await stop.wait()
            # Items handed out by a claim cut short come back when their lease ends.
            claiming.cancel()
            await asyncio.gather(claiming, return_exceptions=True)
            await self._wind_down()
        finally:
            for task in (claiming, heartbeat):
                task.cancel()
            await asyncio.gather(claiming, heartbeat, return_exceptions=True)
            await self._mqtt.stop()

    # Claiming.

    async def _claim_forever(self) -> None:
        unreachable = False
        while True:
            if len(self._jobs) >= self._options.max_jobs:
                self._job_ended.clear()
                await self._job_ended.wait()
                continue
            try:
                response = await self._client.claim(self._capacity(), wait_s=DEFAULT_CLAIM_WAIT_S)
            except OrchestratorUnavailableError as err:
                if not unreachable:
                    _LOGGER.warning("%s; retrying", err)
                unreachable = True
                await asyncio.sleep(self._backoff.next_delay())
                continue
            except WorkRequestError as err:
                _LOGGER.error("%s; check the worker's orchestrator token and scope", err)  # noqa: TRY400
                await asyncio.sleep(self._backoff.next_delay())
                continue
            if unreachable:
                _LOGGER.info("The orchestrator at %s answers again", self._client.url)
                unreachable = False
            self._backoff.reset()
            self._lease_timeout_s = response.lease_timeout_s
            for item in response.items:
                self._start_job(item)

    def _start_job(self, item: WorkItem) -> None:
        _LOGGER.info(
            "Running %s (step %s of run %s, try %d)",
            item.kind,
            item.step_name,
            item.run_id,
            item.attempt,
        )
        task = asyncio.create_task(self._run_job(item), name=f"kitty-worker-{item.id}")
        self._jobs[task] = item
        task.add_done_callback(self._job_done)
        self._publish_capacity()

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.pop(task, None)
        self._job_ended.set()
        self._publish_capacity()
        if not task.cancelled() and (error := task.exception()) is not None:
            _LOGGER.error("A job failed unexpectedly", exc_info=error)

    # Running one item.

    async def _run_job(self, item: WorkItem) -> None:
        work = asyncio.create_task(self._execute(item))
        lease = asyncio.create_task(self._keep_lease(item))
        try:
            await asyncio.wait((work, lease), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also when this job is cancelled (the worker stops): neither outlives it.
            for task in (work, lease):
                task.cancel()
            await asyncio.gather(work, lease, return_exceptions=True)
        if not work.done() or work.cancelled():
            _LOGGER.warning("Lost the lease on %s; another node runs it now", item.id)
            return
        await self._report(item, work.result())

    async def _execute(self, item: WorkItem) -> _Outcome:
        kind = KINDS.get(item.kind)
        if kind is None:
            return _Outcome(
                failure=WorkFailedError(
                    f"node {self.node_id} does not run steps of kind {item.kind!r};"
                    f" it runs {', '.join(KINDS)}",
                    retryable=False,
                )
            )
        context = WorkContext(
            item=item, node_id=self.node_id, log=lambda line: self._log(item, line)
        )
        try:
            async with asyncio.timeout(item.timeout_s):
                return _Outcome(result=await kind(context))
        except WorkFailedError as err:
            return _Outcome(failure=err)
        except TimeoutError:
            return _Outcome(
                failure=WorkFailedError(f"the step did not finish within {item.timeout_s:g} s")
            )
        except Exception as err:
            _LOGGER.exception("Step %s of run %s failed unexpectedly", item.step_name, item.run_id)
            return _Outcome(
                failure=WorkFailedError(f"unexpected error on node {self.node_id}: {err!r}")
            )

    async def _keep_lease(self, item: WorkItem) -> None:
        """Renew the lease until the orchestrator says it has ended, then return."""
        while True:
            await asyncio.sleep(self._lease_timeout_s / HEARTBEATS_PER_LEASE)
            try:
                await self._client.heartbeat(item)
            except LeaseLostError:
                return
            except (OrchestratorUnavailableError, WorkRequestError) as err:
                # The lease may still run out; the next heartbeat will say so.
                _LOGGER.debug("Heartbeat of %s failed: %s", item.id, err)

    async def _log(self, item: WorkItem, line: str) -> None:
        _LOGGER.info("%s: %s", item.step_name, line)
        try:
            await self._client.log(item, [line])
        except (OrchestratorUnavailableError, WorkRequestError, LeaseLostError) as err:
            # Log lines are best effort; the outcome is what must arrive.
            _LOGGER.debug("Log line of %s not delivered: %s", item.id, err)

    async def _report(self, item: WorkItem, outcome: _Outcome) -> None:
        backoff = Backoff(maximum=self._lease_timeout_s / HEARTBEATS_PER_LEASE)
        while True:
            try:
                if outcome.failure is None:
                    await self._client.complete(item, outcome.result or {})
                    _LOGGER.info("Completed %s", item.id)
                else:
                    await self._client.fail(
                        item, outcome.failure.message, retryable=outcome.failure.retryable
                    )
                    _LOGGER.warning("Failed %s: %s", item.id, outcome.failure.message)
            except LeaseLostError as err:
                _LOGGER.warning("The outcome of %s was refused: %s", item.id, err)
            except (OrchestratorUnavailableError, WorkRequestError) as err:
                _LOGGER.debug("Reporting %s failed: %s; retrying", item.id, err)
                await asyncio.sleep(backoff.next_delay())
                continue
            return

    # Stopping.

    async def _wind_down(self) -> None:
        if not self._jobs:
            return
        _LOGGER.info(
            "Stopping: %d running jobs get %g s to finish",
            len(self._jobs),
            self._options.stop_grace_s,
        )
        await asyncio.wait(list(self._jobs), timeout=self._options.stop_grace_s)
        unfinished = dict(self._jobs)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        for item in unfinished.values():
            with contextlib.suppress(
                OrchestratorUnavailableError, WorkRequestError, LeaseLostError
            ):
                await self._client.release(item)
                _LOGGER.info("Gave %s back to the queue", item.id)

    # Capacity.

    def _capacity(self, *, online: bool = True) -> NodeCapacity:
        return NodeCapacity(
            node_id=self.node_id,
            online=online,
            capabilities=list(self._options.capabilities),
            max_jobs=self._options.max_jobs,
            running_jobs=len(self._jobs) if online else 0,
            cpu_count=cpu_count(),
            load_1m=load_1m(),
            memory_available_mb=memory_available_mb(),
            at=datetime.now(UTC),
        )

    def _publish_capacity(self) -> None:
        self._mqtt.set_retained(self._capacity_topic, self._capacity(), qos=NODE_CAPACITY.qos)

    async def _heartbeat_capacity(self) -> None:
        while True:
            await asyncio.sleep(self._options.heartbeat_s)
            self._publish_capacity()


async def serve(options: WorkerOptions, data_dir: Path, stop: asyncio.Event) -> None:
    """Run a worker with `options` until `stop` is set.

    Raises:
        CapabilityError: A capability is advertised that this machine cannot serve.
    """
    node_id = options.node_id
    if node_id is None:
        node_id = await asyncio.to_thread(node_id_of, data_dir)
    await check_capabilities(options.capabilities)
    async with aiohttp.ClientSession() as session:
        worker = Worker(
            options,
            node_id=node_id,
            client=WorkClient(
                session, options.orchestrator.url, options.orchestrator.token.get_secret_value()
            ),
            broker=BrokerConfig.from_options(options.mqtt) if options.mqtt else None,
        )
        await worker.run(stop)


def main(argv: Sequence[str] | None = None) -> None:
    """Run `python -m kittyai.worker` until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m kittyai.worker", description="KITTY worker")
    parser.add_argument("--options", type=Path, default=DEFAULT_OPTIONS_PATH)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    args = parser.parse_args(argv)

    redactor = SecretRedactor()
    # A worker belongs to the orchestrator: its log lines say so.
    configure_logging(WORKER_LOG_NAME, "info", redactor)
    try:
        options = WorkerOptions.load(args.options)
    except OSError as err:
        _LOGGER.critical("Cannot read the options file %s: %s", args.options, err.strerror)
        raise SystemExit(2) from None
    except ValidationError as err:
        _LOGGER.critical("Invalid options in %s: %s", args.options, describe_errors(err))
        raise SystemExit(2) from None
    redactor.add(options.orchestrator.token.get_secret_value())
    if options.mqtt is not None and options.mqtt.password is not None:
        redactor.add(options.mqtt.password.get_secret_value())
    configure_logging(WORKER_LOG_NAME, options.log_level, redactor)
    try:
        asyncio.run(_serve_until_signalled(options, args.data))
    except CapabilityError as err:
        _LOGGER.critical("Worker not started: %s", err)
        raise SystemExit(2) from None
    except Exception:
        _LOGGER.critical("The worker stopped on an error", exc_info=True)
        raise SystemExit(1) from None
    _LOGGER.info("Worker stopped")


async def _serve_until_signalled(options: WorkerOptions, data_dir: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(options, data_dir, stop)
