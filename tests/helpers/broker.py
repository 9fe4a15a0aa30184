"""A real Mosquitto broker on a free port, owned by one test or by the tests of a module."""

from collections.abc import Iterator
import getpass
from pathlib import Path
import shutil
import subprocess

import pytest

from tests.helpers.net import free_port, loopback_sockets, wait_for_port
from tests.helpers.processes import terminate

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class MosquittoBroker:
    """Starts, stops and restarts Mosquitto on one fixed port, without persistence."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        """Prepare a broker whose config and log live in `workdir`."""
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._conf = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # Run as root, Mosquitto would switch to its own user and lose access here.
            f"user {getpass.getuser()}\n"
            "persistence false\n"
            f"log_dest file {self.log_path}\n"
            "log_type all\n",
            encoding="utf-8",
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        self._process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self._conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        """Stop the broker; retained messages are gone with it."""
        if self._process is None:
            return
        terminate(self._process, timeout=10)
        self._process = None

    def restart(self) -> None:
        """Stop and start the broker on the same port."""
        self.stop()
        self.start()


def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """Run one Mosquitto for a module whose services stay connected across its tests."""
    with loopback_sockets():
        broker = MosquittoBroker(tmp_path_factory.mktemp("broker"))
        broker.start()
    yield broker
    broker.stop()
