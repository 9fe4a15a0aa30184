"""Real OctoPrint 1.11.8 with its Virtual Printer, on a free 127.0.0.1 port.

`scripts/bootstrap` installs OctoPrint into `.venv-octoprint` on Python 3.13 (it does
not run on KITTY's 3.14). The server runs with access control on, as every real
install does: an admin user with a known API key is written before the first start.
"""

import http.client
import json
import os
from pathlib import Path
import secrets
import subprocess
import time
from typing import Any
import urllib.error
import urllib.request

from tests.helpers.net import free_port
from tests.helpers.processes import terminate

ROOT = Path(__file__).resolve().parents[2]
OCTOPRINT_VENV = Path(os.environ.get("KITTY_OCTOPRINT_VENV", ROOT / ".venv-octoprint"))
OCTOPRINT = OCTOPRINT_VENV / "bin" / "octoprint"
VIRTUAL_PORT = "VIRTUAL"
# The camera the server offers: a relative stream URL (as a camera behind OctoPrint's
# own proxy is configured) and an absolute snapshot URL.
STREAM_PATH = "/webcam/?action=stream"
SNAPSHOT_URL = "http://127.0.0.1:8080/?action=snapshot"

# Sets the user's API key in users.yaml; OctoPrint's CLI can add users but not keys.
_SET_API_KEY = """
import sys, yaml
path, user, key = sys.argv[1:]
with open(path) as f:
    users = yaml.safe_load(f)
users[user]["apikey"] = key
with open(path, "w") as f:
    yaml.safe_dump(users, f)
"""


class OctoPrintError(RuntimeError):
    """The OctoPrint peer did not do what a test asked of it."""


class OctoPrintServer:
    """One OctoPrint process; stops and starts again on the same port and basedir."""

    def __init__(self, workdir: Path) -> None:
        """Prepare the server; its basedir and log live in `workdir`."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.username = "kitty"
        self.password = secrets.token_urlsafe(12)
        self.api_key = secrets.token_hex(16).upper()
        self.basedir = workdir / "octoprint"
        self.log_path = workdir / "octoprint.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (setting up its basedir the first time) and wait until it answers."""
        if not OCTOPRINT.exists():
            raise FileNotFoundError(f"{OCTOPRINT} is missing: run scripts/bootstrap")
        if not (self.basedir / "config.yaml").exists():
            self._set_up()
        command = [
            str(OCTOPRINT),
            "serve",
            "--basedir",
            str(self.basedir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        if os.geteuid() == 0:
            # OctoPrint refuses to run as root without it; CI runs as root.
            command.append("--iknowwhatimdoing")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_until_answering(timeout)
        except BaseException:
            # Whatever went wrong (an interrupt too), no server is left behind.
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server, killing it if it does not exit in time."""
        if self._process is None:
            return
        terminate(self._process, timeout=15)
        self._process = None

    def log(self) -> str:
        """Return what the server wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def connect_virtual_printer(self, timeout: float = 15.0) -> None:
        """Attach the Virtual Printer and wait until the printer is operational."""
        self.request(
            "POST",
            "/api/connection",
            {
                "command": "connect",
                "port": VIRTUAL_PORT,
                "baudrate": 250000,
                "printerProfile": "_default",
                "autoconnect": False,
            },
        )
        deadline = time.monotonic() + timeout
        while self.request("GET", "/api/job")["state"] != "Operational":
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Virtual Printer did not connect:\n{self.log()}")
            time.sleep(0.1)

    def disconnect_printer(self, timeout: float = 15.0) -> None:
        """Detach the printer and wait until OctoPrint reports it offline."""
        self.request("POST", "/api/connection", {"command": "disconnect"})
        deadline = time.monotonic() + timeout
        while self.request("GET", "/api/connection")["current"]["state"] != "Closed":
            if time.monotonic() > deadline:
                raise TimeoutError(f"the printer did not disconnect:\n{self.log()}")
            time.sleep(0.1)

    def trigger_firmware_error(self) -> None:
        """Make the Virtual Printer report a fatal firmware error (a thermal runaway)."""
        self.request(
            "POST", "/api/printer/command", {"commands": ["!!DEBUG:trigger_fatal_error_marlin"]}
        )

    def pending_app_keys(self) -> dict[str, str]:
        """Return the AppKeys requests waiting for the admin: app name by user token."""
        body = self.request("GET", "/api/plugin/appkeys")
        return {token: pending["app_id"] for token, pending in body["pending"].items()}

    def decide_app_key(self, app: str, *, allow: bool, timeout: float = 5.0) -> None:
        """Allow or deny the pending AppKeys request of `app`, as the admin does in the UI.

        OctoPrint's dialog posts the decision under the request's user token, which
        OctoPrint lists only to its logged-in users (`GET /api/plugin/appkeys`).
        """
        deadline = time.monotonic() + timeout
        while not (tokens := [t for t, name in self.pending_app_keys().items() if name == app]):
            if time.monotonic() > deadline:
                raise OctoPrintError(f"no AppKeys request of {app!r} is pending")
            time.sleep(0.1)
        for token in tokens:
            self.request("POST", f"/plugin/appkeys/decision/{token}", {"decision": allow})

    def request(self, method: str, path: str, body: object = None) -> Any:
        """Call OctoPrint's API as the admin; return the decoded JSON body, None if empty."""
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"X-Api-Key": self.api_key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                data = response.read()
        except urllib.error.HTTPError as err:
            raise OctoPrintError(
                f"{method} {path} answered HTTP {err.code}: {err.read().decode(errors='replace')}"
            ) from err
        return json.loads(data) if data else None

    def _set_up(self) -> None:
        """Write the config and the admin user before the first start."""
        self.basedir.mkdir(parents=True, exist_ok=True)
        config = {
            "server": {
                # No setup wizard; access control stays on regardless.
                "firstRun": False,
                # Nothing reaches out to the internet: no checks, no feeds.
                "onlineCheck": {"enabled": False},
                "pluginBlacklist": {"enabled": False},
                "pythonEolCheck": {"enabled": False},
            },
            "plugins": {
                "virtual_printer": {"enabled": True},
                "tracking": {"enabled": False},
                "errortracking": {"enabled": False},
                # At its current settings version: the plugin's migration from the
                # pre-1.9 `webcam` section would overwrite the URLs with defaults.
                "classicwebcam": {
                    "_config_version": 1,
                    "stream": STREAM_PATH,
                    "snapshot": SNAPSHOT_URL,
                },
                # These fetch from the internet at start and log tracebacks offline.
                "_disabled": ["announcements", "softwareupdate", "pluginmanager", "health_check"],
            },
        }
        # JSON is YAML: no YAML writer needed on this side.
        (self.basedir / "config.yaml").write_text(json.dumps(config), encoding="utf-8")
        with self.log_path.open("ab") as log:
            subprocess.run(
                [
                    str(OCTOPRINT),
                    "--basedir",
                    str(self.basedir),
                    "user",
                    "add",
                    self.username,
                    "--password",
                    self.password,
                    "--admin",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
            subprocess.run(
                [
                    str(OCTOPRINT_VENV / "bin" / "python"),
                    "-c",
                    _SET_API_KEY,
                    str(self.basedir / "users.yaml"),
                    self.username,
                    self.api_key,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )

    def _wait_until_answering(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None:
                raise OctoPrintError(f"OctoPrint exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"OctoPrint did not come up:\n{self.log()}")
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            self.request("GET", "/api/version")
        # While it starts, OctoPrint's stand-in server answers with a broken status line.
        except OctoPrintError, http.client.HTTPException, OSError:
            return False
        return True
