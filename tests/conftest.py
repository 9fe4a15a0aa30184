"""Shared fixtures.

The module-level import of `custom_components.kitty` must stay: it binds the
`custom_components` package to this repository before Home Assistant's test
harness mounts its own testing config, which would otherwise hide KITTY
("Integration not found").
"""

from collections.abc import Iterator
from pathlib import Path
import socket

import pytest
import pytest_socket

from custom_components.kitty.const import DOMAIN  # noqa: F401
from tests.helpers.broker import MosquittoBroker
from tests.helpers.llama import LlamaServer


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
    # Session fixtures run before the per-test fixture that opens loopback sockets,
    # so open them for the start (which polls /v1/models), then put the guard back.
    guarded = socket.socket
    pytest_socket.enable_socket()
    try:
        server = LlamaServer(tmp_path_factory.mktemp("llama"))
        server.start()
    finally:
        socket.socket = guarded  # type: ignore[misc]
    yield server
    server.stop()
