"""The README's run command brings KITTY up for real, and Ctrl-C takes it all down."""

from collections.abc import Iterator
import json
import os
from pathlib import Path
import selectors
import signal
import subprocess
import time
from typing import Any
import urllib.request

import pytest

from kittyai.catalog import ServiceName
from tests.helpers.net import free_port

ROOT = Path(__file__).resolve().parent.parent
# The first start of Home Assistant installs the packages of `default_config`.
STARTUP_TIMEOUT = 900.0


def _processes_mentioning(text: str) -> list[str]:
    """Return the command lines of running processes that mention `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def _get_json(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _post_json(url: str, body: dict[str, Any], token: str) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


class RunningStack:
    """`scripts/develop` as a user runs it, with its output collected line by line."""

    def __init__(self, stack_dir: Path) -> None:
        self.dir = stack_dir
        env = {
            **os.environ,
            "KITTY_HA_PORT": str(free_port()),
            "KITTY_MQTT_PORT": str(free_port()),
            "KITTY_LLM_PORT": str(free_port()),
            **{f"KITTY_{name.upper()}_PORT": str(free_port()) for name in ServiceName},
        }
        self.process = subprocess.Popen(
            [str(ROOT / "scripts" / "develop"), "--dir", str(stack_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        self.output: list[str] = []
        self._pending = ""

    def wait_for_line(self, needle: str, timeout: float) -> str:
        """Return the first output line containing `needle`."""
        assert self.process.stdout is not None
        # Read the raw pipe: a buffered readline() would hide lines from select().
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                while "\n" in self._pending:
                    line, self._pending = self._pending.split("\n", 1)
                    self.output.append(line)
                    if needle in line:
                        return line
                if not selector.select(timeout=1):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._pending += chunk.decode(errors="replace")
        pytest.fail(f"no line with {needle!r}; output so far:\n" + "\n".join(self.output))

    def interrupt(self) -> int:
        """Press Ctrl-C and return the exit code."""
        self.process.send_signal(signal.SIGINT)
        self.wait_for_line("[kitty] stopped", timeout=120)
        return self.process.wait(timeout=30)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path / "stack")
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


@pytest.mark.slow
@pytest.mark.timeout(STARTUP_TIMEOUT + 300)
def test_run_command_brings_up_kitty_and_ctrl_c_stops_everything(stack: RunningStack) -> None:
    stack.wait_for_line("KITTY is running", STARTUP_TIMEOUT)

    credentials = json.loads((stack.dir / "credentials.json").read_text())
    assert credentials["username"]
    assert credentials["password"]
    config = _get_json(f"{credentials['url']}/api/config", credentials["token"])
    assert "kitty" in config["components"]
    assert "mqtt" in config["components"]
    entries = _get_json(
        f"{credentials['url']}/api/config/config_entries/entry?domain=kitty",
        credentials["token"],
    )
    assert [entry["state"] for entry in entries] == ["loaded"]

    # The router reports itself over the stack's own broker.
    deadline = time.monotonic() + 60
    while True:
        states = _get_json(f"{credentials['url']}/api/states", credentials["token"])
        router = [
            state
            for state in states
            if state["entity_id"].startswith("binary_sensor.kitty_router")
            and state["attributes"].get("device_class") == "connectivity"
        ]
        if router and router[0]["state"] == "on":
            break
        assert time.monotonic() < deadline, f"router never showed online: {router}"
        time.sleep(1)

    # The router's default backend is the real local model, and it answers through the router.
    ports = json.loads((stack.dir / "ports.json").read_text())
    router_url = f"http://127.0.0.1:{ports['services']['router']}"
    router_token = (stack.dir / "services" / "router" / "data" / "api_token").read_text().strip()
    models = _get_json(f"{router_url}/v1/models", router_token)
    backends = {model["id"]: model["kitty"] for model in models["data"]}
    assert backends["gemma"]["role"] == "local"
    answer = _post_json(
        f"{router_url}/v1/chat/completions",
        {
            "model": "kitty-local",
            "messages": [{"role": "user", "content": "What does PWM stand for?"}],
            "max_tokens": 30,
            "temperature": 0,
        },
        router_token,
    )
    assert "pulse width modulation" in answer["choices"][0]["message"]["content"].lower()
    assert answer["kitty"]["tier"] == "local"

    # The orchestrator is connected: a drill run started through Home Assistant's
    # action runs to its end, and Home Assistant's sensor follows its statistics.
    created = _post_json(
        f"{credentials['url']}/api/services/kitty/create_run?return_response",
        {"template": "noop", "params": {"steps": 2}},
        credentials["token"],
    )
    run_id = created["service_response"]["run_id"]
    orchestrator_url = f"http://127.0.0.1:{ports['services']['orchestrator']}"
    orchestrator_token = (
        (stack.dir / "services" / "orchestrator" / "data" / "api_token").read_text().strip()
    )
    deadline = time.monotonic() + 60
    while (run := _get_json(f"{orchestrator_url}/api/runs/{run_id}", orchestrator_token))[
        "state"
    ] != "succeeded":
        assert time.monotonic() < deadline, f"the drill run never succeeded: {run}"
        time.sleep(0.5)
    deadline = time.monotonic() + 60
    while True:
        states = _get_json(f"{credentials['url']}/api/states", credentials["token"])
        last_result = [
            state
            for state in states
            if state["entity_id"].startswith("sensor.") and "last_run_result" in state["entity_id"]
        ]
        if last_result and last_result[0]["state"] == "succeeded":
            break
        assert time.monotonic() < deadline, f"no last run result: {last_result}"
        time.sleep(1)

    assert stack.interrupt() == 0
    assert _processes_mentioning(str(stack.dir)) == []
    # The local model runs from the repository's .venv-llm: find it by its port.
    assert _processes_mentioning(f"--port {ports['llm']} ") == []
