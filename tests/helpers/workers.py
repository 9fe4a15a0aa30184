"""Worker processes (`python -m kittyai.worker`) and an in-process server of the work routes."""

from collections.abc import Sequence
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
from typing import Any, Self

from aiohttp import web
from prometheus_client import CollectorRegistry

from kittyai.http_server import create_app
from kittyai.orchestrator.database import Database
from kittyai.orchestrator.nodes import NodeRegistry
from kittyai.orchestrator.work_api import add_work_routes
from kittyai.orchestrator.workqueue import WorkQueue
from kittyai.worker.protocol import NODES_REGISTER_SCOPE
from tests.helpers.net import free_port

WORKER_TOKEN = "worker-token-0123456789"
ADMIN_TOKEN = "orchestrator-admin-token-0123456789"
# May read runs, not claim work.
READER_TOKEN = "orchestrator-reader-token-0123456789"
# Python's way to make `import cadquery` fail, as on a machine without it.
WITHOUT_CADQUERY = (
    "import runpy, sys; sys.modules['cadquery'] = None;"
    " runpy.run_module('kittyai.worker', run_name='__main__', alter_sys=True)"
)


class WorkerProcess:
    """One worker process with its own options file and data dir."""

    def __init__(
        self,
        workdir: Path,
        node_id: str,
        *,
        orchestrator_url: str,
        mqtt_port: int | None,
        capabilities: Sequence[str] = ("cad",),
        token: str = WORKER_TOKEN,
        without_cadquery: bool = False,
        **options: Any,
    ) -> None:
        """Write the options; nothing runs until `start`."""
        self.node_id = node_id
        self.data_dir = workdir / f"worker-{node_id}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.options_path = self.data_dir.parent / f"worker-{node_id}-options.json"
        self.log_path = self.data_dir.parent / f"worker-{node_id}.log"
        body: dict[str, Any] = {
            "log_level": "debug",
            "node_id": node_id,
            "orchestrator": {"url": orchestrator_url, "token": token},
            "capabilities": list(capabilities),
            "heartbeat_s": 0.5,
            **options,
        }
        if mqtt_port is not None:
            body["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port}
        self.options_path.write_text(json.dumps(body), encoding="utf-8")
        self._without_cadquery = without_cadquery
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start the process; it claims work as soon as it reaches the orchestrator."""
        program = ["-c", WITHOUT_CADQUERY] if self._without_cadquery else ["-m", "kittyai.worker"]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    *program,
                    "--options",
                    str(self.options_path),
                    "--data",
                    str(self.data_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ.copy(),
            )
        return self

    def kill(self) -> None:
        """SIGKILL it: no clean stop, so the broker sends its last will."""
        self._signal(signal.SIGKILL)

    def stop(self) -> int:
        """SIGTERM it and return its exit code."""
        return self._signal(signal.SIGTERM)

    def wait(self, timeout: float = 60.0) -> int:
        """Return the exit code once it has ended on its own."""
        assert self._process is not None
        code = self._process.wait(timeout=timeout)
        self._process = None
        return code

    def _signal(self, signum: int) -> int:
        if self._process is None:
            return 0
        self._process.send_signal(signum)
        try:
            code = self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self._process = None
        return code

    def log(self) -> str:
        """Return what the process wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


class WorkServer:
    """The work queue and its routes on a real port, with the orchestrator's HTTP scaffold.

    The admin token may do everything, the worker token only `nodes:register`, the
    reader token only `runs:read`.
    """

    def __init__(
        self, database: Database, *, lease_timeout_s: float, port: int | None = None
    ) -> None:
        """Prepare the queue and the app on `port` (a free one by default)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.nodes = NodeRegistry(stale_after_s=lease_timeout_s)
        self.queue = WorkQueue(database, self.nodes, lease_timeout_s=lease_timeout_s)
        self.app = create_app(
            api_token=ADMIN_TOKEN,
            registry=CollectorRegistry(),
            public_paths=(),
            scoped_tokens={
                WORKER_TOKEN: ("workers", frozenset({NODES_REGISTER_SCOPE})),
                READER_TOKEN: ("reader", frozenset({"runs:read"})),
            },
        )
        add_work_routes(self.app, self.queue, self.nodes)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Start the queue and serve the routes."""
        self.queue.start()
        self._runner = web.AppRunner(self.app, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        """Stop serving and stop the queue."""
        await self.queue.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
