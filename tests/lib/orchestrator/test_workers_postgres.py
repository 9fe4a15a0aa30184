"""Acceptance: the orchestrator on PostgreSQL and two worker processes share 20 steps.

Everything is the real thing: `python -m kittyai.orchestrator` on a throwaway
PostgreSQL database, two `python -m kittyai.worker` processes with the capability
`cad` and two slots each, and Mosquitto. Twenty drill runs of one step each are
created through the API. One worker is SIGKILLed while it holds a step: the step
is queued again when its lease runs out and the other worker completes it. Every
step completes exactly once.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kittyai.catalog import ServiceName
from kittyai.contract import NODE_CAPACITY
from kittyai.contract.orchestrator import NodeCapacity, NodeInfo, RunInfo, RunState
from kittyai.orchestrator.database import Database
from kittyai.orchestrator.nodes import NodeRegistry
from kittyai.orchestrator.workqueue import LeaseEnd, WorkItemRecord, WorkQueue, WorkState
from tests.helpers.broker import MosquittoBroker
from tests.helpers.postgres import throwaway_database
from tests.helpers.services import ServiceApi, ServiceProcess
from tests.helpers.workers import WORKER_TOKEN, WorkerProcess
from tests.lib.mqtt_probe import MqttProbe

RUNS = 20
LEASE_S = 3.0
# Runs, workers and the orchestrator on a busy two-core machine.
DONE_TIMEOUT_S = 180.0
STARTUP_S = 60.0

pytestmark = pytest.mark.slow


@pytest.fixture
def database_url() -> Iterator[str]:
    with throwaway_database() as url:
        yield url


@pytest.fixture
async def orchestrator(
    tmp_path: Path, mqtt_broker: MosquittoBroker, database_url: str
) -> AsyncIterator[ServiceProcess]:
    process = ServiceProcess(
        ServiceName.ORCHESTRATOR,
        tmp_path,
        mqtt_port=mqtt_broker.port,
        extra_options={
            "database": {"url": database_url},
            "lease_timeout_s": LEASE_S,
            # All twenty runs at once: the workers' slots are what limits them.
            "quotas": {"runs_per_template": RUNS},
            "writes_per_minute": 1000,
            "write_burst": RUNS,
            "scoped_tokens": [
                {"name": "workers", "token": WORKER_TOKEN, "scopes": ["nodes:register"]}
            ],
        },
    )
    await asyncio.to_thread(process.start, STARTUP_S)
    yield process
    await asyncio.to_thread(process.stop)


@pytest.fixture
async def api(orchestrator: ServiceProcess) -> AsyncIterator[ServiceApi]:
    async with aiohttp.ClientSession() as session:
        yield ServiceApi(orchestrator, session)


@pytest.fixture
def workers(
    tmp_path: Path, mqtt_broker: MosquittoBroker, orchestrator: ServiceProcess
) -> Iterator[list[WorkerProcess]]:
    started = [
        WorkerProcess(
            tmp_path,
            node_id,
            orchestrator_url=orchestrator.url,
            mqtt_port=mqtt_broker.port,
            capabilities=["cad"],
            max_jobs=2,
        ).start()
        for node_id in ("bench-a", "bench-b")
    ]
    yield started
    for worker in started:
        worker.kill()


async def nodes(api: ServiceApi) -> dict[str, NodeInfo]:
    body = await api.get("/api/nodes")
    return {node["node_id"]: NodeInfo.model_validate(node) for node in body["nodes"]}


async def runs(api: ServiceApi) -> list[RunInfo]:
    body = await api.get("/api/runs", limit="200")
    return [RunInfo.model_validate(run) for run in body["runs"]]


async def poll_until(api: ServiceApi, condition: Any, timeout: float) -> None:  # noqa: ASYNC109
    """Return once `await condition(api)` is true; fail after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not await condition(api):  # noqa: ASYNC110 - the API is the truth
            await asyncio.sleep(0.1)


async def work_items(database_url: str, workdir: Path) -> list[WorkItemRecord]:
    """Read the orchestrator's work item records from the shared database."""
    database = await Database.open(database_url, workdir)
    try:
        queue = WorkQueue(database, NodeRegistry(stale_after_s=LEASE_S), lease_timeout_s=LEASE_S)
        return await queue.items()
    finally:
        await database.close()


async def test_twenty_steps_spread_over_two_workers_and_a_killed_one_loses_its_step(
    api: ServiceApi,
    workers: list[WorkerProcess],
    mqtt_broker: MosquittoBroker,
    database_url: str,
    tmp_path: Path,
) -> None:
    killed, survivor = workers

    async def both_online(api: ServiceApi) -> bool:
        listed = await nodes(api)
        return all(w.node_id in listed and listed[w.node_id].online for w in workers)

    await poll_until(api, both_online, STARTUP_S)
    for number in range(RUNS):
        answer = await api.call(
            "POST",
            "/api/runs",
            json_body={
                "template": "noop",
                "params": {"steps": 1, "seconds": 1, "capability": "cad"},
                "idempotency_key": f"spread-{number}",
            },
        )
        assert answer.status == 201, answer.body

    async def killed_worked_and_holds_more(api: ServiceApi) -> bool:
        done_by_killed = [run for run in await runs(api) if run.steps[0].node == killed.node_id]
        return bool(done_by_killed) and (await nodes(api))[killed.node_id].claimed > 0

    await poll_until(api, killed_worked_and_holds_more, DONE_TIMEOUT_S)
    async with MqttProbe(
        mqtt_broker.port, NODE_CAPACITY.topic_for(node_id=killed.node_id)
    ) as probe:
        await asyncio.to_thread(killed.kill)
        will = await probe.expect(
            lambda message: not NodeCapacity.model_validate_json(message.payload).online
        )
    assert will.topic.value == NODE_CAPACITY.topic_for(node_id=killed.node_id)

    async def all_finished(api: ServiceApi) -> bool:
        return all(run.state.finished for run in await runs(api))

    await poll_until(api, all_finished, DONE_TIMEOUT_S)

    finished = await runs(api)
    assert len(finished) == RUNS
    assert {run.state for run in finished} == {RunState.SUCCEEDED}
    assert {run.steps[0].node for run in finished} == {killed.node_id, survivor.node_id}
    assert not (await nodes(api))[killed.node_id].online

    items = await work_items(database_url, tmp_path / "reader")
    assert len(items) == RUNS
    assert {item.run_id for item in items} == {run.id for run in finished}
    for item in items:
        completions = [lease for lease in item.leases if lease.end is LeaseEnd.COMPLETED]
        assert item.state is WorkState.SUCCEEDED
        assert [lease.node for lease in completions] == [item.finished_by]
    requeued = [item for item in items if len(item.leases) > 1]
    assert requeued, "the killed worker's step was not queued again"
    for item in requeued:
        assert [(lease.node, lease.end) for lease in item.leases] == [
            (killed.node_id, LeaseEnd.EXPIRED),
            (survivor.node_id, LeaseEnd.COMPLETED),
        ]
    by_run = {run.id: run for run in finished}
    assert {by_run[item.run_id].steps[0].node for item in requeued} == {survivor.node_id}
