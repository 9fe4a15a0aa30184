"""Fixtures for the service library tests: service processes, probes, an HTTP session."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kittyai.catalog import ServiceName
from tests.helpers.broker import MosquittoBroker
from tests.helpers.services import ServiceProcess
from tests.lib.fake_supervisor import FakeSupervisor

type StartService = Callable[..., Awaitable[ServiceProcess]]


@pytest.fixture
def start_service(tmp_path: Path, mqtt_broker: MosquittoBroker) -> Iterator[StartService]:
    """Start `python -m kittyai.<name>` processes; any still running are killed at the end.

    `mqtt=False` leaves the broker out of the options (the Supervisor may provide it).
    """
    processes: list[ServiceProcess] = []

    async def start(name: ServiceName, *, mqtt: bool = True, **kwargs: Any) -> ServiceProcess:
        process = ServiceProcess(
            name, tmp_path, mqtt_port=mqtt_broker.port if mqtt else None, **kwargs
        )
        processes.append(process)
        # Off the loop: the process may call back into servers this loop runs.
        await asyncio.to_thread(process.start)
        return process

    yield start
    for process in processes:
        process.kill()


@pytest.fixture
async def fake_supervisor(mqtt_broker: MosquittoBroker) -> AsyncIterator[FakeSupervisor]:
    """Serve the Supervisor API on 127.0.0.1, providing the test's broker."""
    supervisor = FakeSupervisor(token="supervisor-token-42", mqtt_port=mqtt_broker.port)
    await supervisor.start()
    yield supervisor
    await supervisor.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session for one test."""
    async with aiohttp.ClientSession() as session:
        yield session
