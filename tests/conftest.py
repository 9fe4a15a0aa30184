"""Shared fixtures.

The module-level import of `custom_components.kitty` must stay: it binds the
`custom_components` package to this repository before Home Assistant's test
harness mounts its own testing config, which would otherwise hide KITTY
("Integration not found").
"""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.kitty.const import DOMAIN  # noqa: F401
from tests.helpers.broker import MosquittoBroker
from tests.helpers.llama import LlamaServer
from tests.helpers.mobile_app import Phone, PushServer, register_phone
from tests.helpers.net import loopback_sockets


@pytest.fixture(autouse=True)
def allow_loopback_sockets(socket_enabled: None) -> None:
    """Let tests talk to their real peers; pytest-socket still allows only 127.0.0.1."""


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Start a real Mosquitto broker on a free port for one test."""
    broker = MosquittoBroker(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """Run the real local model (Gemma 3 270M on llama.cpp) once for the whole session."""
    with loopback_sockets():
        server = LlamaServer(tmp_path_factory.mktemp("llama"))
        server.start()
    yield server
    server.stop()


@pytest.fixture
async def push_server() -> AsyncIterator[PushServer]:
    """Receive the push notifications Home Assistant sends to the test's phone."""
    async with PushServer.serving() as server:
        yield server


@pytest.fixture
async def phone(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, push_server: PushServer
) -> Phone:
    """A phone with the Home Assistant app, registered with mobile_app, pushing to the test."""
    return await register_phone(hass, hass_client, push_server)
