"""Real worker processes against the work routes and a real Mosquitto.

The orchestrator's side is its work queue and routes served in-process, on SQLite;
the tests make the engine's call (`execute`) and watch what the workers do.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from kittyai.contract import NODE_CAPACITY
from kittyai.contract.orchestrator import NodeCapacity, StepInfo
from kittyai.orchestrator.database import Database
from kittyai.orchestrator.templates.base import StepFailedError
from kittyai.orchestrator.workqueue import LeaseEnd, WorkOutcome, WorkState
from tests.helpers.broker import MosquittoBroker
from tests.helpers.net import free_port
from tests.helpers.workers import WorkerProcess, WorkServer
from tests.lib.mqtt_probe import MqttProbe
from tests.lib.waiting import wait_until

RUN = "r-0000000000b1"
LEASE_S = 3.0
# A worker process loads Python and its libraries first; one with `cad` also CadQuery.
STARTUP_S = 60.0


class RunLog:
    """The `log` the engine passes: keeps the lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(None, tmp_path / "orchestrator")
    yield database
    await database.close()


@pytest.fixture
async def server(database: Database) -> AsyncIterator[WorkServer]:
    server = WorkServer(database, lease_timeout_s=LEASE_S)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def workers(tmp_path: Path, mqtt_broker: MosquittoBroker) -> Iterator[Any]:
    """Start worker processes; any still running are killed at the end."""
    started: list[WorkerProcess] = []

    def start(
        node_id: str, url: str, *, capabilities: Sequence[str] = ("slice",), **options: Any
    ) -> WorkerProcess:
        worker = WorkerProcess(
            tmp_path,
            node_id,
            orchestrator_url=url,
            mqtt_port=mqtt_broker.port,
            capabilities=capabilities,
            **options,
        )
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.kill()


def step(kind: str = "noop", *, capability: str = "slice", **params: Any) -> StepInfo:
    return StepInfo(
        index=0, name="work", kind=kind, title="Work", params=params, capability=capability
    )


def execute(
    server: WorkServer, the_step: StepInfo, log: RunLog | None = None, *, attempt: int = 1
) -> asyncio.Task[WorkOutcome]:
    return asyncio.create_task(
        server.queue.execute(run_id=RUN, step=the_step, attempt=attempt, log=log or RunLog())
    )


def capacity_of(message: aiomqtt.Message) -> NodeCapacity:
    assert isinstance(message.payload, bytes)
    return NodeCapacity.model_validate_json(message.payload)


def capacity_on(node_id: str, *, online: bool) -> Any:
    topic = NODE_CAPACITY.topic_for(node_id=node_id)
    return lambda message: message.topic.value == topic and capacity_of(message).online is online


async def test_the_capacity_is_retained_and_the_last_will_says_offline(
    mqtt_broker: MosquittoBroker, server: WorkServer, workers: Any
) -> None:
    worker = workers("bench-1", server.url, capabilities=["slice", "print:mk4"], max_jobs=3)
    async with MqttProbe(mqtt_broker.port, NODE_CAPACITY.wildcard) as probe:
        online = capacity_of(await probe.expect(capacity_on("bench-1", online=True), STARTUP_S))
    async with MqttProbe(mqtt_broker.port, NODE_CAPACITY.wildcard) as late:
        retained = await late.expect(capacity_on("bench-1", online=True))

        await asyncio.to_thread(worker.kill)

        await late.expect(capacity_on("bench-1", online=False))
    async with MqttProbe(mqtt_broker.port, NODE_CAPACITY.wildcard) as after:
        await after.expect(capacity_on("bench-1", online=False))

    assert (online.capabilities, online.max_jobs, online.running_jobs) == (
        ["slice", "print:mk4"],
        3,
        0,
    )
    assert online.cpu_count >= 1
    assert online.memory_available_mb > 0
    assert retained.retain


async def test_a_worker_runs_a_step_and_its_log_reaches_the_run(
    server: WorkServer, workers: Any
) -> None:
    workers("bench-2", server.url)
    log = RunLog()

    outcome = await asyncio.wait_for(execute(server, step(seconds=0.1), log), STARTUP_S)

    assert outcome.node == "bench-2"
    assert outcome.result == {
        "step": 0,
        "attempt": 1,
        "seconds": 0.1,
        "choice": None,
        "node": "bench-2",
    }
    assert log.lines == ["drill step work ran on node bench-2 (try 1)"]
    [node] = server.nodes.list().nodes
    assert (node.node_id, node.online) == ("bench-2", True)


async def test_a_cad_worker_builds_the_part_and_measures_it(
    server: WorkServer, workers: Any
) -> None:
    workers("cad-box", server.url, capabilities=["cad"])
    part = step(
        "cad.part",
        capability="cad",
        family="box",
        parameters={"length": 40, "width": 30, "height": 10},
    )

    outcome = await asyncio.wait_for(execute(server, part), STARTUP_S)

    assert outcome.node == "cad-box"
    assert outcome.result["volume_mm3"] == pytest.approx(12000)
    assert outcome.result["bbox_mm"] == pytest.approx([40, 30, 10])
    assert outcome.result["parameters"]["length"] == 40


async def test_bad_part_parameters_fail_the_step_for_good(server: WorkServer, workers: Any) -> None:
    workers("cad-box", server.url, capabilities=["cad"])
    part = step("cad.part", capability="cad", family="box", parameters={"length": -1})

    with pytest.raises(StepFailedError, match="length") as failure:
        await asyncio.wait_for(execute(server, part), STARTUP_S)

    assert failure.value.retryable is False


async def test_an_unknown_kind_or_a_drill_failure_fails_the_step_for_good(
    server: WorkServer, workers: Any
) -> None:
    workers("bench-3", server.url)

    with pytest.raises(StepFailedError) as unknown:
        await asyncio.wait_for(execute(server, step("gcode.send")), STARTUP_S)
    with pytest.raises(StepFailedError) as drill:
        await asyncio.wait_for(execute(server, step(fail=True), attempt=2), STARTUP_S)

    assert str(unknown.value) == (
        "node bench-3 does not run steps of kind 'gcode.send'; it runs noop, cad.part"
    )
    assert str(drill.value) == "Drill: step work fails as asked"
    assert (unknown.value.retryable, drill.value.retryable) == (False, False)


async def wait_for_a_claim(server: WorkServer) -> None:
    """Return once the (only) worker has a claim open: it holds the step or waits for one."""
    await wait_until(
        lambda: server.nodes.list().nodes and server.nodes.list().nodes[0].claimed, STARTUP_S
    )


async def test_sigterm_lets_a_short_step_finish_then_says_offline(
    mqtt_broker: MosquittoBroker, server: WorkServer, workers: Any
) -> None:
    worker = workers("bench-4", server.url, stop_grace_s=30)
    running = execute(server, step(seconds=1))
    await wait_for_a_claim(server)

    async with MqttProbe(mqtt_broker.port, NODE_CAPACITY.wildcard) as probe:
        assert await asyncio.to_thread(worker.stop) == 0
        await probe.expect(capacity_on("bench-4", online=False))

    assert (await running).node == "bench-4"


async def test_sigterm_gives_back_a_step_that_does_not_finish_in_time(
    mqtt_broker: MosquittoBroker, server: WorkServer, workers: Any
) -> None:
    worker = workers("bench-5", server.url, stop_grace_s=0)
    running = execute(server, step(seconds=600))
    await wait_for_a_claim(server)

    async with MqttProbe(mqtt_broker.port, NODE_CAPACITY.wildcard) as probe:
        assert await asyncio.to_thread(worker.stop) == 0
        await probe.expect(capacity_on("bench-5", online=False))

    [record] = await server.queue.items(run_id=RUN)
    assert record.state is WorkState.PENDING
    assert [lease.end for lease in record.leases] == [LeaseEnd.RELEASED]
    running.cancel()


async def test_a_worker_waits_for_an_orchestrator_that_is_not_up_yet(
    database: Database, workers: Any
) -> None:
    port = free_port()
    worker = workers("early-bird", f"http://127.0.0.1:{port}")
    await wait_until(lambda: "retrying" in worker.log(), STARTUP_S)

    server = WorkServer(database, lease_timeout_s=LEASE_S, port=port)
    await server.start()
    try:
        outcome = await asyncio.wait_for(execute(server, step()), STARTUP_S)
    finally:
        await server.close()

    assert outcome.node == "early-bird"


async def test_a_cad_worker_without_cadquery_refuses_to_start(
    server: WorkServer, workers: Any
) -> None:
    worker = workers("no-kernel", server.url, capabilities=["cad"], without_cadquery=True)

    code = await asyncio.to_thread(worker.wait)

    assert code == 2
    assert "the capability 'cad' needs CadQuery" in worker.log()
    assert "install kittyai[cad], or remove 'cad' from capabilities" in worker.log()
