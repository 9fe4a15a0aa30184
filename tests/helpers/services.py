"""Run a KITTY service as the real process users run (`python -m kittyai.<name>`), and call it."""

from collections.abc import Mapping
from dataclasses import dataclass
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any
import urllib.error
import urllib.request

import aiohttp

from kittyai.catalog import ServiceName
from tests.helpers.net import free_port


class ServiceProcess:
    """One KITTY service process with its own options file and data dir."""

    def __init__(
        self,
        name: ServiceName,
        workdir: Path,
        *,
        mqtt_port: int | None,
        token: str = "test-token-0123456789",
        extra_options: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Prepare the options file; nothing runs until `start`."""
        self.name = name
        self.port = free_port()
        self.token = token
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / f"{name}-data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.options_path = workdir / f"{name}-options.json"
        self.log_path = workdir / f"{name}.log"
        options: dict[str, Any] = {
            "log_level": "debug",
            "bind": "127.0.0.1",
            "port": self.port,
            "api_token": token,
        }
        if mqtt_port is not None:
            options["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port}
        options.update(extra_options or {})
        self.options_path.write_text(json.dumps(options), encoding="utf-8")
        self._env = {**os.environ, **(env or {})}
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start the process and wait until `/health` answers."""
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                f"kittyai.{self.name}",
                "--options",
                str(self.options_path),
                "--data",
                str(self.data_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except urllib.error.URLError, OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not become healthy:\n{self.log()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the process: no clean shutdown, so the broker sends the will."""
        self._signal(signal.SIGKILL)

    def stop(self) -> int:
        """SIGTERM the process and return its exit code."""
        return self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> int:
        if self._process is None:
            return 0
        self._process.send_signal(signum)
        try:
            code = self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self._process = None
        return code

    def log(self) -> str:
        """Return what the process wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Answer:
    """What a service answered: its status, headers and JSON body (None for another body)."""

    status: int
    headers: Mapping[str, str]
    body: Any

    @property
    def code(self) -> str | None:
        """Return the error code of a JSON error body."""
        return self.body["error"]["code"] if isinstance(self.body, dict) else None


@dataclass(slots=True)
class ServiceApi:
    """Calls the HTTP API of one service process as it is, for its statuses and bodies."""

    process: ServiceProcess
    session: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        token: str | None = None,
        content_type: str | None = None,
    ) -> Answer:
        """Send one request with the process's token, or `token`; an empty one sends none."""
        token = self.process.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        async with self.session.request(
            method,
            self.process.url + path,
            json=json_body,
            data=data,
            params=params,
            headers=headers,
        ) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return Answer(response.status, dict(response.headers), body)

    async def get(self, path: str, **params: str) -> Any:
        """Return the JSON body of a GET that must succeed."""
        answer = await self.call("GET", path, params=params)
        assert answer.status == 200, answer.body
        return answer.body
