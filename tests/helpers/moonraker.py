"""A real Moonraker 0.11, with a real Klippy (Kalico's) behind it when a test needs one.

`scripts/bootstrap` installs both into `.venv-moonraker` (Python 3.13). Klippy runs
in file-output mode against `tests/data/klipper/klipper.dict`, so no MCU is needed,
paced to wall-clock time by `klippy_paced.py`: jobs take the seconds their G-code
says. Klippy compiles its C helper into that venv on its first start (a few seconds
with gcc); later starts reuse it.
"""

from collections.abc import Callable
import contextlib
from contextlib import closing
import json
import os
from pathlib import Path
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request

from tests.helpers.net import free_port

ROOT = Path(__file__).resolve().parents[2]
MOONRAKER_VENV = Path(os.environ.get("KITTY_MOONRAKER_VENV", ROOT / ".venv-moonraker"))
PYTHON = MOONRAKER_VENV / "bin" / "python"
KLIPPER_DATA = ROOT / "tests" / "data" / "klipper"
PACED_KLIPPY = Path(__file__).with_name("klippy_paced.py")
# A Unix socket's path has room for 107 bytes.
MAX_SOCKET_PATH = 100
# Where Moonraker keeps its API key; its own scripts/fetch-apikey.sh reads it so.
API_KEY_QUERY = "SELECT password FROM authorized_users WHERE username = '_API_KEY_USER_'"
# Webcam URLs as a Mainsail install configures them: relative to the web frontend.
STREAM_PATH = "/webcam/?action=stream"
SNAPSHOT_PATH = "/webcam/?action=snapshot"


class MoonrakerServer:
    """Moonraker on a free 127.0.0.1 port, and optionally Klippy on a socket beside it."""

    def __init__(self, workdir: Path, *, api_key_required: bool, with_klippy: bool) -> None:
        """Write the configs under `workdir`; nothing runs until `start`.

        With `api_key_required`, no client is trusted, so every call needs the key;
        otherwise 127.0.0.1 is trusted and needs none.
        """
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.with_klippy = with_klippy
        self.api_key: str | None = None
        self.data_dir = workdir / "moonraker-data"
        self.gcodes_dir = self.data_dir / "gcodes"
        config_dir = self.data_dir / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        self.gcodes_dir.mkdir(exist_ok=True)
        self.klippy_socket = workdir / "klippy.sock"
        if len(str(self.klippy_socket)) > MAX_SOCKET_PATH:
            raise ValueError(f"{workdir} is too long a path for Klippy's socket")
        self.moonraker_log_path = workdir / "moonraker.log"
        self.klippy_log_path = workdir / "klippy.log"
        self._klippy_output_path = workdir / "klippy-output.log"
        self._pty = workdir / "klippy-pty"
        self._moonraker_conf = config_dir / "moonraker.conf"
        self._printer_cfg = config_dir / "printer.cfg"
        trusted = "" if api_key_required else "trusted_clients:\n  127.0.0.1\n"
        self._moonraker_conf.write_text(
            "[server]\n"
            "host: 127.0.0.1\n"
            f"port: {self.port}\n"
            f"klippy_uds_address: {self.klippy_socket}\n"
            "\n[authorization]\n"
            f"{trusted}"
            "\n[file_manager]\n"
            # No systemd or DBus: Moonraker manages no services here.
            "\n[machine]\n"
            "provider: none\n"
            "\n[webcam printer]\n"
            "service: mjpegstreamer\n"
            f"stream_url: {STREAM_PATH}\n"
            f"snapshot_url: {SNAPSHOT_PATH}\n",
            encoding="utf-8",
        )
        template = (KLIPPER_DATA / "printer.cfg").read_text(encoding="utf-8")
        self._printer_cfg.write_text(
            template.replace("{gcodes}", str(self.gcodes_dir)), encoding="utf-8"
        )
        self._moonraker: subprocess.Popen[bytes] | None = None
        self._klippy: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        """Start Klippy (if wanted) and Moonraker; return once Klippy is ready.

        The generous default covers Klippy's first start, which compiles its C helper.
        """
        if not PYTHON.exists():
            raise FileNotFoundError(f"{PYTHON} is missing: run scripts/bootstrap")
        try:
            if self.with_klippy:
                self.start_klippy(wait=False)
            self._start_moonraker()
            deadline = time.monotonic() + timeout
            self._wait(lambda: self._server_info() is not None, deadline, "Moonraker answering")
            self.api_key = self._wait(self._read_api_key, deadline, "Moonraker's API key")
            if self.with_klippy:
                self._wait(self.klippy_ready, deadline, "Klippy ready")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Moonraker and Klippy; `start` brings both back on the same port."""
        _terminate(self._moonraker)
        self._moonraker = None
        self.stop_klippy()

    def start_klippy(self, *, wait: bool = True, timeout: float = 120.0) -> None:
        """Start Klippy; with `wait`, return once Moonraker reports it ready."""
        if self._klippy is not None:
            return
        with self._klippy_output_path.open("ab") as output:
            self._klippy = subprocess.Popen(
                [
                    str(PYTHON),
                    str(PACED_KLIPPY),
                    str(self._printer_cfg),
                    "-o",
                    "/dev/null",
                    "-d",
                    str(KLIPPER_DATA / "klipper.dict"),
                    "-a",
                    str(self.klippy_socket),
                    "-I",
                    str(self._pty),
                    "-l",
                    str(self.klippy_log_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self._wait(self.klippy_ready, time.monotonic() + timeout, "Klippy ready")

    def stop_klippy(self) -> None:
        """Stop Klippy, as if the printer's host lost its firmware; Moonraker stays up."""
        _terminate(self._klippy)
        self._klippy = None

    def klippy_ready(self) -> bool:
        """Return whether Moonraker reports Klippy connected and ready."""
        info = self._server_info()
        return info is not None and info.get("klippy_state") == "ready"

    def log(self) -> str:
        """Return what Moonraker and Klippy wrote so far, for a failure's report."""
        parts = []
        for path in (self.moonraker_log_path, self._klippy_output_path, self.klippy_log_path):
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace")
                parts.append(f"==> {path.name} <==\n{text[-20_000:]}")
        return "\n".join(parts)

    def _start_moonraker(self) -> None:
        with self.moonraker_log_path.open("ab") as output:
            self._moonraker = subprocess.Popen(
                [
                    str(PYTHON),
                    "-m",
                    "moonraker",
                    "--datapath",
                    str(self.data_dir),
                    "--configfile",
                    str(self._moonraker_conf),
                    "--logfile",
                    str(self.moonraker_log_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _server_info(self) -> dict[str, object] | None:
        """Return `/server/info`; {} while it refuses a missing key, None while down."""
        headers = {"X-Api-Key": self.api_key} if self.api_key else {}
        request = urllib.request.Request(f"{self.url}/server/info", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return dict(json.load(response)["result"])
        except urllib.error.HTTPError:
            return {}
        except urllib.error.URLError, OSError:
            return None

    def _read_api_key(self) -> str | None:
        database = self.data_dir / "database" / "moonraker-sql.db"
        if not database.exists():
            return None
        try:
            # sqlite3's context manager ends a transaction; closing() closes the file.
            with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
                row = connection.execute(API_KEY_QUERY).fetchone()
        except sqlite3.OperationalError:
            # Moonraker has not created its tables yet.
            return None
        return str(row[0]) if row else None

    def _wait[T](self, probe: Callable[[], T | None], deadline: float, what: str) -> T:
        """Return `probe()`'s first truthy result; fail with the logs at `deadline`."""
        while True:
            for name, process in (("Moonraker", self._moonraker), ("Klippy", self._klippy)):
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"{name} exited while waiting for {what}:\n{self.log()}")
            if result := probe():
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} in time:\n{self.log()}")
            time.sleep(0.1)


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a process and everything it started; kill what does not exit in time."""
    if process is None:
        return
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    # Whatever the process left behind in its session goes too.
    _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
