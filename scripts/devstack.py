"""Run KITTY for real on one machine: broker, services and a Home Assistant dev instance.

`scripts/develop` bootstraps the toolchain and then runs this file. It starts
Mosquitto, the local model (llama-cpp-python's server running Gemma 3 270M, the
router's default backend), the four KITTY services as plain processes and Home
Assistant with `custom_components/kitty` loaded, onboards HA, creates the MQTT and
KITTY config entries through HA's own config flows, connects the CAD service in
KITTY's options (the CAD service reads words through the router), prints the URL
and credentials, and stops everything it started on Ctrl-C.

State lives in one folder (default `.dev/`, or `KITTY_DEV_DIR`); re-running
reuses it. Ports are chosen on the first run (defaults below, or the
`KITTY_*_PORT` variables, or a free port when the default is taken) and kept.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import asdict, dataclass
import getpass
from http import HTTPStatus
import json
import os
from pathlib import Path
import secrets
import shutil
import signal
import socket
import sys
from typing import Any

import aiohttp

from kittyai.catalog import SERVICES, ServiceName
from kittyai.identity import Identity

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
# The local model, installed by `scripts/bootstrap` apart from HA's venv.
LLM_VENV = Path(os.environ.get("KITTY_LLM_VENV", ROOT / ".venv-llm"))
LLM_GGUF = LLM_VENV / "models" / "gemma-3-270m-q4_k_m.gguf"
# The packaged GGUF is the pretrained model, without a chat template: this one writes
# the chat as a plain transcript, which it continues well (see the file).
LLM_TOKENIZER_CONFIG = ROOT / "scripts" / "llm" / "gemma3-tokenizer-config.json"
LLM_MODEL = "gemma-3-270m"
LLM_DEFAULT_PORT = 8780
CLIENT_ID_PATH = "/"
STARTUP_TIMEOUT = 300.0
STOP_TIMEOUT = 30.0
USERNAME = "kitty"


class StackError(Exception):
    """Something the user has to fix before the stack can run."""


def log(message: str) -> None:
    """Print a progress line of the launcher."""
    print(f"[kitty] {message}", flush=True)


def port_is_free(port: int) -> bool:
    """Return whether nothing listens on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(env_name: str, default: int) -> int:
    """Return the port from the environment, else the default if free, else any free one."""
    if value := os.environ.get(env_name):
        return int(value)
    if port_is_free(default):
        return default
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StackPorts:
    """The ports of one dev stack, fixed on its first run."""

    ha: int
    mqtt: int
    llm: int
    services: dict[str, int]

    @classmethod
    def load_or_choose(cls, path: Path) -> StackPorts:
        """Read the ports kept in `path`, or choose and keep them."""
        if path.exists():
            kept = json.loads(path.read_text(encoding="utf-8"))
            if "llm" in kept:
                return cls(**kept)
            # A stack from before the local model: keep its ports, choose this one once.
            ports = cls(**kept, llm=pick_port("KITTY_LLM_PORT", LLM_DEFAULT_PORT))
        else:
            ports = cls(
                ha=pick_port("KITTY_HA_PORT", 8123),
                mqtt=pick_port("KITTY_MQTT_PORT", 1884),
                llm=pick_port("KITTY_LLM_PORT", LLM_DEFAULT_PORT),
                services={
                    name.value: pick_port(f"KITTY_{name.upper()}_PORT", spec.default_port)
                    for name, spec in SERVICES.items()
                },
            )
        path.write_text(json.dumps(asdict(ports), indent=2), encoding="utf-8")
        return ports

    def check_free(self) -> None:
        """Fail clearly when another process holds one of the kept ports."""
        taken = [
            f"{what} {port}"
            for what, port in (
                ("HA", self.ha),
                ("MQTT", self.mqtt),
                ("local model", self.llm),
                *self.services.items(),
            )
            if not port_is_free(port)
        ]
        if taken:
            raise StackError(
                f"ports already in use: {', '.join(taken)}. Stop whatever holds them "
                "(another dev stack?) or delete the stack folder to choose new ports."
            )


def _die_with_parent() -> None:
    """Make the child get SIGTERM if the launcher dies without cleaning up."""
    import ctypes  # noqa: PLC0415 - Linux-only, needed in the forked child only

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class ProcessGroup:
    """Child processes started in order and stopped in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        """Write each child's output to `log_dir/<name>.log`."""
        self._log_dir = log_dir
        self._children: list[tuple[str, asyncio.subprocess.Process]] = []

    async def start(self, name: str, *argv: str, env: dict[str, str] | None = None) -> None:
        """Start one child in its own session, so Ctrl-C reaches only the launcher."""
        with (self._log_dir / f"{name}.log").open("ab") as output:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                # No threads run yet when the launcher starts its children.
                preexec_fn=_die_with_parent,
            )
        self._children.append((name, process))

    async def wait_first_exit(self) -> str:
        """Return the name of the first child that exits."""
        waiters = {asyncio.ensure_future(process.wait()): name for name, process in self._children}
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        return waiters[done.pop()]

    async def stop_all(self) -> None:
        """Stop children newest first (HA, services, the local model, then the broker)."""
        for name, process in reversed(self._children):
            if process.returncode is not None:
                continue
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log(f"{name} did not stop in {STOP_TIMEOUT:.0f} s; killing it")
                process.kill()
                await process.wait()
        self._children.clear()


async def wait_until(probe: Any, what: str, seconds: float = STARTUP_TIMEOUT) -> Any:
    """Call the async `probe` until it returns something truthy."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    if result := await probe():
                        return result
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise StackError(f"timed out waiting for {what}") from None


class HomeAssistantSetup:
    """Onboards a fresh HA and creates the config entries KITTY needs, through HA's APIs."""

    def __init__(self, session: aiohttp.ClientSession, url: str, credentials: Path) -> None:
        """Talk to the HA instance at `url`; keep the credentials in `credentials`."""
        self._session = session
        self._url = url
        self._credentials_path = credentials
        self.credentials: dict[str, str] = {}

    async def wait_ready(self) -> None:
        """Wait until HA's HTTP API answers."""

        await wait_until(
            lambda: _onboarding_answers(self._session, f"{self._url}/api/onboarding"),
            "Home Assistant to answer",
        )

    async def ensure_onboarded(self) -> None:
        """Onboard HA once (admin user, core config, analytics, integration step)."""
        async with self._session.get(f"{self._url}/api/onboarding") as response:
            # Once onboarded, HA no longer serves its onboarding API.
            if response.status == HTTPStatus.NOT_FOUND:
                steps = {}
            else:
                steps = {step["step"]: step["done"] for step in await response.json()}
        if all(steps.values()):
            if not self._credentials_path.exists():
                raise StackError(
                    f"Home Assistant is onboarded but {self._credentials_path} is missing; "
                    "delete the stack folder to start over"
                )
            self.credentials = json.loads(self._credentials_path.read_text(encoding="utf-8"))
            return
        if steps.get("user"):
            raise StackError(
                "Home Assistant onboarding was interrupted before the credentials were "
                "saved; delete the stack folder to start over"
            )
        password = secrets.token_urlsafe(12)
        client_id = f"{self._url}{CLIENT_ID_PATH}"
        onboarded_user = await self._post(
            "/api/onboarding/users",
            {
                "client_id": client_id,
                "name": "KITTY Admin",
                "username": USERNAME,
                "password": password,
                "language": "en",
            },
        )
        access_token = await self._exchange_code(onboarded_user["auth_code"], client_id)
        await self._post("/api/onboarding/core_config", {}, token=access_token)
        await self._post("/api/onboarding/analytics", {}, token=access_token)
        await self._post(
            "/api/onboarding/integration",
            {"client_id": client_id, "redirect_uri": f"{client_id}?auth_callback=1"},
            token=access_token,
        )
        self.credentials = {
            "url": self._url,
            "username": USERNAME,
            "password": password,
            "token": await self._long_lived_token(access_token),
        }
        self._credentials_path.write_text(json.dumps(self.credentials, indent=2), "utf-8")
        self._credentials_path.chmod(0o600)

    async def ensure_entry(self, domain: str, user_input: dict[str, Any]) -> None:
        """Create a config entry through the integration's own user flow, once."""
        entries = await self._get(f"/api/config/config_entries/entry?domain={domain}")
        if entries:
            return
        flow = await self._post("/api/config/config_entries/flow", {"handler": domain})
        result = await self._post(f"/api/config/config_entries/flow/{flow['flow_id']}", user_input)
        if result.get("type") != "create_entry":
            raise StackError(f"could not set up {domain}: {result.get('errors') or result}")

    async def set_options(self, domain: str, user_input: dict[str, Any]) -> None:
        """Set the options of the integration's entry through its own options flow.

        Options that did not change leave the entry as it is; new ones reload it.
        """
        [entry] = await self._get(f"/api/config/config_entries/entry?domain={domain}")
        flow = await self._post(
            "/api/config/config_entries/options/flow", {"handler": entry["entry_id"]}
        )
        result = await self._post(
            f"/api/config/config_entries/options/flow/{flow['flow_id']}", user_input
        )
        if result.get("type") != "create_entry":
            problem = result.get("errors") or result
            raise StackError(f"could not set the {domain} options: {problem}")

    async def wait_entry_loaded(self, domain: str) -> None:
        """Wait until the integration's entry has set up."""

        async def probe() -> bool:
            entries = await self._get(f"/api/config/config_entries/entry?domain={domain}")
            return bool(entries) and entries[0]["state"] == "loaded"

        await wait_until(probe, f"the {domain} config entry to load", seconds=60)

    async def _exchange_code(self, code: str, client_id: str) -> str:
        async with self._session.post(
            f"{self._url}/auth/token",
            data={"grant_type": "authorization_code", "code": code, "client_id": client_id},
        ) as response:
            response.raise_for_status()
            return str((await response.json())["access_token"])

    async def _long_lived_token(self, access_token: str) -> str:
        async with self._session.ws_connect(f"{self._url}/api/websocket") as websocket:
            await websocket.receive_json()  # auth_required
            await websocket.send_json({"type": "auth", "access_token": access_token})
            await websocket.receive_json()  # auth_ok
            await websocket.send_json(
                {
                    "id": 1,
                    "type": "auth/long_lived_access_token",
                    "client_name": "KITTY dev stack",
                    "lifespan": 3650,
                }
            )
            reply = await websocket.receive_json()
        if not reply.get("success"):
            raise StackError(f"could not create a long-lived token: {reply}")
        return str(reply["result"])

    def _headers(self, token: str | None) -> dict[str, str]:
        token = token or self.credentials.get("token")
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _get(self, path: str) -> Any:
        async with self._session.get(f"{self._url}{path}", headers=self._headers(None)) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def _post(self, path: str, body: dict[str, Any], token: str | None = None) -> Any:
        async with self._session.post(
            f"{self._url}{path}", json=body, headers=self._headers(token)
        ) as response:
            if response.status >= HTTPStatus.BAD_REQUEST:
                raise StackError(f"POST {path} failed: {response.status} {await response.text()}")
            return await response.json()


class DevStack:
    """Everything `scripts/develop` runs, rooted in one folder."""

    def __init__(self, root: Path) -> None:
        """Keep all state under `root`."""
        self.root = root
        self.logs = root / "logs"
        self.ha_config = root / "ha"
        self.share_dir = root / "share"
        self.credentials_path = root / "credentials.json"
        self.processes = ProcessGroup(self.logs)

    def prepare(self) -> StackPorts:
        """Create the folders and config files; return the stack's ports."""
        # HA serves /local/ (KITTY's CAD previews) only from a www folder there at start.
        for folder in (
            self.logs,
            self.ha_config / "www",
            self.root / "mosquitto",
            self.share_dir / "kitty" / "knowledge",
        ):
            folder.mkdir(parents=True, exist_ok=True)
        if not LLM_GGUF.exists():
            raise StackError(f"{LLM_GGUF} is missing: run scripts/bootstrap")
        ports = StackPorts.load_or_choose(self.root / "ports.json")
        ports.check_free()
        (self.root / "mosquitto" / "mosquitto.conf").write_text(
            f"listener {ports.mqtt} 127.0.0.1\n"
            "allow_anonymous true\n"
            # Run as root, Mosquitto would switch to its own user and lose access here.
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {self.root / 'mosquitto'}/\n"
            f"log_dest file {self.logs / 'mosquitto.log'}\n",
            encoding="utf-8",
        )
        (self.ha_config / "configuration.yaml").write_text(
            "# Written by scripts/develop on every start.\n"
            "default_config:\n\n"
            # What a fresh installation has; config_change runs patch it.
            "automation: !include automations.yaml\n\n"
            "logger:\n"
            "  default: info\n"
            "  logs:\n"
            "    custom_components.kitty: debug\n",
            encoding="utf-8",
        )
        automations = self.ha_config / "automations.yaml"
        if not automations.exists():
            automations.write_text("[]\n", encoding="utf-8")
        integrations = self.ha_config / "custom_components"
        integrations.mkdir(exist_ok=True)
        link = integrations / "kitty"
        if not link.is_symlink():
            link.symlink_to(ROOT / "custom_components" / "kitty", target_is_directory=True)
        for name in ServiceName:
            service_dir = self.root / "services" / name
            (service_dir / "data").mkdir(parents=True, exist_ok=True)
            options: dict[str, Any] = {
                "log_level": "info",
                "bind": "127.0.0.1",
                "port": ports.services[name],
                "mqtt": {"host": "127.0.0.1", "port": ports.mqtt},
            }
            if name is ServiceName.ROUTER:
                options["backends"] = [
                    {
                        "name": "gemma",
                        "kind": "openai_compatible",
                        "url": f"http://127.0.0.1:{ports.llm}/v1",
                        "model": LLM_MODEL,
                        # Two CPU cores: a long answer takes a while.
                        "timeout": 120,
                    }
                ]
            if name in (ServiceName.CAD, ServiceName.RAG):
                # CAD reads prompts and knowledge writes project summaries through the
                # router, like any KITTY client.
                options["model"] = {
                    "url": f"http://127.0.0.1:{ports.services[ServiceName.ROUTER]}/v1",
                    "api_key": self._token(ServiceName.ROUTER),
                    "model": "kitty-auto",
                }
            if name is ServiceName.RAG:
                # The share folder of an installation: drop files into its
                # kitty/knowledge/ and they are ingested.
                options["share_dir"] = str(self.share_dir)
            (service_dir / "options.json").write_text(
                json.dumps(options, indent=2), encoding="utf-8"
            )
        return ports

    async def run(self) -> int:
        """Start everything, set HA up, then wait for Ctrl-C or a crash."""
        ports = self.prepare()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await self._start(ports)
            watcher = asyncio.ensure_future(self.processes.wait_first_exit())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        except StackError as err:
            log(f"error: {err}")
            return 1
        else:
            if watcher.done():
                log(f"{watcher.result()} exited unexpectedly; see {self.logs}")
                return 1
            watcher.cancel()
            return 0
        finally:
            log("stopping everything")
            await self.processes.stop_all()
            log("stopped")

    async def _start_service(self, name: ServiceName, ports: StackPorts) -> None:
        service_dir = self.root / "services" / name
        log(f"starting kittyai.{name} on 127.0.0.1:{ports.services[name]}")
        await self.processes.start(
            f"kitty-{name}",
            sys.executable,
            "-m",
            f"kittyai.{name}",
            "--options",
            str(service_dir / "options.json"),
            "--data",
            str(service_dir / "data"),
        )

    def _add_orchestrator_options(self, ports: StackPorts, ha_url: str, ha_token: str) -> None:
        """Point the orchestrator at Home Assistant (URL, token, config folder) and its peers."""
        path = self.root / "services" / ServiceName.ORCHESTRATOR / "options.json"
        options = json.loads(path.read_text(encoding="utf-8"))
        options["home_assistant"] = {
            "url": ha_url,
            "token": ha_token,
            "config_dir": str(self.ha_config),
        }
        for name, key in ((ServiceName.CAD, "cad"), (ServiceName.RAG, "knowledge")):
            options[key] = {
                "url": f"http://127.0.0.1:{ports.services[name]}",
                "token": self._token(name),
            }
        path.write_text(json.dumps(options, indent=2), encoding="utf-8")

    def _token(self, name: ServiceName) -> str:
        """Return the API token a service keeps in its data folder, made now if new.

        Made before the service first runs, a token can go into another's options.
        """
        return Identity.load(self.root / "services" / name / "data", None).api_token

    async def _start(self, ports: StackPorts) -> None:
        log(f"starting Mosquitto on 127.0.0.1:{ports.mqtt}")
        await self.processes.start(
            "mosquitto", MOSQUITTO, "-c", str(self.root / "mosquitto" / "mosquitto.conf")
        )
        log(f"starting the local model ({LLM_MODEL}) on 127.0.0.1:{ports.llm}")
        await self.processes.start(
            "llama-server",
            str(LLM_VENV / "bin" / "python"),
            "-m",
            "llama_cpp.server",
            "--model",
            str(LLM_GGUF),
            "--model_alias",
            LLM_MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(ports.llm),
            "--n_ctx",
            "4096",
            # Every core, for generation too (the server's default uses half).
            "--n_threads",
            str(os.cpu_count() or 1),
            "--chat_format",
            "hf-tokenizer-config",
            "--hf_tokenizer_config_path",
            str(LLM_TOKENIZER_CONFIG),
            # Queue concurrent requests instead of cutting the running one short.
            "--interrupt_requests",
            "false",
            "--verbose",
            "false",
        )
        # The orchestrator starts once Home Assistant has a token for it.
        for name in ServiceName:
            if name is not ServiceName.ORCHESTRATOR:
                await self._start_service(name, ports)
        log(f"starting Home Assistant on 127.0.0.1:{ports.ha} (first start installs its packages)")
        # HA 2026.10 keeps its HTTP settings in storage and treats YAML ones as an
        # unconfirmed trial that it reverts after five minutes; SETUP_PORT sets the
        # port of the stored default config instead.
        await self.processes.start(
            "homeassistant",
            str(VENV_BIN / "hass"),
            "-c",
            str(self.ha_config),
            env={"SETUP_PORT": str(ports.ha)},
        )

        ha_url = f"http://127.0.0.1:{ports.ha}"
        router_url = f"http://127.0.0.1:{ports.services[ServiceName.ROUTER]}"
        cad_url = f"http://127.0.0.1:{ports.services[ServiceName.CAD]}"
        rag_url = f"http://127.0.0.1:{ports.services[ServiceName.RAG]}"
        orchestrator_url = f"http://127.0.0.1:{ports.services[ServiceName.ORCHESTRATOR]}"
        async with aiohttp.ClientSession() as session:
            llm_models = f"http://127.0.0.1:{ports.llm}/v1/models"
            await wait_until(lambda: _is_ok(session, llm_models), "the local model")
            ha = HomeAssistantSetup(session, ha_url, self.credentials_path)
            await ha.wait_ready()
            await ha.ensure_onboarded()
            self._add_orchestrator_options(ports, ha_url, ha.credentials["token"])
            await self._start_service(ServiceName.ORCHESTRATOR, ports)
            for name in ServiceName:
                url = f"http://127.0.0.1:{ports.services[name]}/health"
                await wait_until(lambda url=url: _is_ok(session, url), f"kittyai.{name}")
            await ha.ensure_entry(
                "mqtt",
                {
                    "broker": "127.0.0.1",
                    "port": ports.mqtt,
                    "other_settings": {"set_client_cert": False, "set_ca_cert": "off"},
                },
            )
            router_token = self._token(ServiceName.ROUTER)
            await ha.ensure_entry("kitty", {"url": router_url, "token": router_token})
            await ha.wait_entry_loaded("kitty")
            await ha.set_options(
                "kitty",
                {
                    "cad": {"url": cad_url, "token": self._token(ServiceName.CAD)},
                    "rag": {"url": rag_url, "token": self._token(ServiceName.RAG)},
                    "orchestrator": {
                        "url": orchestrator_url,
                        "token": self._token(ServiceName.ORCHESTRATOR),
                    },
                },
            )
            await ha.wait_entry_loaded("kitty")
        log("")
        log(f"KITTY is running: {ha_url}")
        log(f"  user: {USERNAME}  password: {ha.credentials['password']}")
        log(f"  long-lived token and password: {self.credentials_path}")
        log(f"  router API: {router_url}  CAD API: {cad_url}  knowledge API: {rag_url}")
        log(f"  orchestrator API: {orchestrator_url}")
        log(f"  knowledge watch folder: {self.share_dir / 'kitty' / 'knowledge'}")
        log(f"  logs: {self.logs}")
        log(f"  local model: http://127.0.0.1:{ports.llm}/v1 ({LLM_MODEL})")
        log("Press Ctrl-C to stop everything.")


async def _is_ok(session: aiohttp.ClientSession, url: str) -> bool:
    async with session.get(url) as response:
        return response.status == HTTPStatus.OK


async def _onboarding_answers(session: aiohttp.ClientSession, url: str) -> bool:
    """Return whether HA answers its onboarding API: with the steps, or 404 once onboarded."""
    async with session.get(url) as response:
        return response.status in (HTTPStatus.OK, HTTPStatus.NOT_FOUND)


def main() -> int:
    """Parse arguments and run the stack until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("KITTY_DEV_DIR", ROOT / ".dev")),
        help="folder for the stack's state (default: .dev, or $KITTY_DEV_DIR)",
    )
    args = parser.parse_args()
    return asyncio.run(DevStack(args.dir.resolve()).run())


if __name__ == "__main__":
    sys.exit(main())
