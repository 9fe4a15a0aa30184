"""KITTY's async client for OctoPrint's REST API, and AppKeys pairing.

Home Assistant polls it (OctoPrint pushes only over SockJS, which KITTY does not
use). Every command reads the printer back until it shows the command took effect:
OctoPrint accepts job commands with HTTP 204 that do nothing (a start without a
selected file, a resume while still pausing). The session is always the caller's,
and no error message or log line contains the API key.
"""

import asyncio
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
import json
import logging
from pathlib import Path
import time
from typing import Any

import aiohttp
from yarl import URL

from kittyai.printers.base import (
    BUSY_STATES,
    PrinterAuthError,
    PrinterBusyError,
    PrinterClient,
    PrinterCommandError,
    PrinterConnectionError,
    PrinterError,
    PrinterFileNotFoundError,
    PrinterInfo,
    PrinterKind,
    PrinterState,
    PrinterStatus,
    StoredFile,
    Temperature,
)

_LOGGER = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
# How long a command may take to show in the printer's state: pausing waits for the
# moves already sent to the printer, which take seconds on a real machine.
COMMAND_TIMEOUT = 30.0
POLL_INTERVAL = 0.25
# Uploads get the request timeout plus the time a slow link (50 kB/s) needs for the file.
_UPLOAD_BYTES_PER_S = 50_000

_DEFAULT_CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=DEFAULT_TIMEOUT)
_AUTH_STATUSES = (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN)
# OctoPrint's words for a printer it lost through an error; otherwise it just says
# "Offline" or names the connection step ("Connecting", "Detecting serial connection").
_ERROR_TEXTS = ("Error", "Offline after error")
# The first flag set decides. The order matters: OctoPrint keeps `printing` set while
# it pauses or cancels, and while it starts, resumes and finishes a job.
_FLAG_STATES = (
    ("error", PrinterState.ERROR),
    ("cancelling", PrinterState.CANCELLING),
    ("pausing", PrinterState.PAUSING),
    ("paused", PrinterState.PAUSED),
    ("printing", PrinterState.PRINTING),
    ("closedOrError", PrinterState.DISCONNECTED),
)
_COMPLETE_PERCENT = 100
_CONNECTED_STATES = frozenset(PrinterState) - {PrinterState.DISCONNECTED, PrinterState.ERROR}


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: Any
    headers: Mapping[str, str]


class OctoPrintClient(PrinterClient):
    """Talks to one OctoPrint server with an API key; Home Assistant polls it."""

    kind = PrinterKind.OCTOPRINT
    pushes = False

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str | URL,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        command_timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        """Use `session` to reach the OctoPrint server at `url` (a path prefix is kept)."""
        self._session = session
        self._url = URL(str(url))
        self._headers = {"X-Api-Key": api_key}
        self._timeout = timeout
        self._request_timeout = aiohttp.ClientTimeout(total=timeout)
        self._command_timeout = command_timeout

    @property
    def url(self) -> URL:
        """Return the server's base URL."""
        return self._url

    async def info(self) -> PrinterInfo:
        """Return who the server is; the version call also proves the key works.

        The unique id is the UUID OctoPrint's discovery plugin announces over SSDP
        (the UDN of `/plugin/discovery/discovery.xml`, the id of Home Assistant's own
        OctoPrint devices); it survives restarts and address changes.
        """
        version = await self._get("api/version")
        settings = await self._get("api/settings")
        discovery = _dig(settings, "plugins", "discovery")
        webcam = settings.get("webcam") or {}
        camera = bool(webcam.get("webcamEnabled"))
        return PrinterInfo(
            kind=PrinterKind.OCTOPRINT,
            unique_id=str(discovery.get("upnpUuid") or self._url),
            name=_dig(settings, "appearance").get("name") or f"OctoPrint ({self._url.host})",
            version=version.get("server"),
            stream_url=self._absolute(webcam.get("streamUrl")) if camera else None,
            snapshot_url=self._absolute(webcam.get("snapshotUrl")) if camera else None,
        )

    async def status(self) -> PrinterStatus:
        """Return the printer's status now; `DISCONNECTED` while OctoPrint has no printer."""
        # 409: OctoPrint has no operational printer; the job's state text says why.
        printer = await self._call(
            "GET", "api/printer", accept=(HTTPStatus.OK, HTTPStatus.CONFLICT)
        )
        # Read second: a job that ends between the two reads then shows as complete
        # (flags printing, or progress 100), never as an idle printer at 95 %.
        job = await self._get("api/job")
        text = job.get("state") or None
        error = job.get("error") or None
        message = f"{text}: {error}" if text and error and error not in text else text
        progress = job.get("progress") or {}
        file = _dig(job, "job", "file")
        common: dict[str, Any] = {
            "message": message,
            "file": file.get("path") or file.get("name"),
            "progress": progress.get("completion"),
            "print_time_s": progress.get("printTime"),
            "time_left_s": progress.get("printTimeLeft"),
        }
        if printer.status == HTTPStatus.CONFLICT:
            offline = PrinterState.ERROR if text in _ERROR_TEXTS else PrinterState.DISCONNECTED
            return PrinterStatus(state=offline, **common)
        temperatures = printer.body.get("temperature") or {}
        return PrinterStatus(
            state=_state(_dig(printer.body, "state", "flags"), common["progress"]),
            nozzle=_temperature(temperatures.get("tool0")),
            bed=_temperature(temperatures.get("bed")),
            **common,
        )

    async def list_files(self) -> list[StoredFile]:
        """Return the G-code files in OctoPrint's local storage, folders included."""
        body = await self._get("api/files/local", params={"recursive": "true"})
        return [_stored_file(entry) for entry in _machine_code(body.get("files") or [])]

    async def upload(self, path: Path, name: str | None = None) -> StoredFile:
        """Upload a local G-code file to OctoPrint's local storage and return it as stored.

        OctoPrint may change the name (it makes names safe for every file system);
        the returned file carries the name to start it by.
        """
        size = (await asyncio.to_thread(path.stat)).st_size
        upload_timeout = aiohttp.ClientTimeout(total=self._timeout + size / _UPLOAD_BYTES_PER_S)
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            form = aiohttp.FormData(quote_fields=False)
            form.add_field(
                "file", handle, filename=name or path.name, content_type="application/octet-stream"
            )
            reply = await self._call(
                "POST",
                "api/files/local",
                data=form,
                accept=(HTTPStatus.CREATED,),
                client_timeout=upload_timeout,
            )
        finally:
            await asyncio.to_thread(handle.close)
        stored = _dig(reply.body, "files", "local")
        stored_name = stored.get("path") or stored.get("name")
        if not stored_name:
            raise PrinterCommandError(f"{self._url} took the upload but did not name the file")
        entry = await self._file(stored_name)
        if entry is None:
            raise PrinterCommandError(f"{self._url} took the upload but does not list it")
        return _stored_file(entry)

    async def start(self, name: str) -> PrinterStatus:
        """Select and start a file OctoPrint holds; return once it prints.

        Raise `PrinterBusyError` if a job holds the printer or it is not connected,
        and `PrinterFileNotFoundError` if there is no such G-code file; both before
        anything is sent.
        """
        before = await self.status()
        if before.busy:
            raise PrinterBusyError(
                f"The printer is busy ({before.message}); it cannot start {name}"
            )
        if before.state not in (PrinterState.IDLE, PrinterState.COMPLETE):
            raise PrinterBusyError(f"The printer is not ready to print ({before.message})")
        entry = await self._file(name)
        if entry is None or entry.get("type") != "machinecode":
            raise PrinterFileNotFoundError(f"OctoPrint at {self._url} has no G-code file {name}")
        # One call selects and starts, so no other client can select a file in between.
        await self._command(_file_path(name), {"command": "select", "print": True})
        started = {PrinterState.PRINTING, PrinterState.PAUSING, PrinterState.PAUSED}
        return await self._wait(
            f"start {name}",
            lambda status: status.file == name and status.state in started,
            pending={PrinterState.IDLE, PrinterState.COMPLETE},
        )

    async def set_targets(
        self, *, nozzle: float | None = None, bed: float | None = None
    ) -> PrinterStatus:
        """Set the targets of the first tool and the bed; return once OctoPrint shows them."""
        if nozzle is not None:
            await self._command(
                "api/printer/tool", {"command": "target", "targets": {"tool0": nozzle}}
            )
        if bed is not None:
            await self._command("api/printer/bed", {"command": "target", "target": bed})
        return await self._wait(
            "set the heater targets",
            lambda status: status.has_targets(nozzle=nozzle, bed=bed),
            pending=_CONNECTED_STATES,
        )

    async def pause(self) -> PrinterStatus:
        """Pause the running job; return once OctoPrint reports it paused."""
        await self._command("api/job", {"command": "pause", "action": "pause"})
        return await self._wait(
            "pause",
            lambda status: status.state is PrinterState.PAUSED,
            pending={PrinterState.PRINTING, PrinterState.PAUSING},
        )

    async def resume(self) -> PrinterStatus:
        """Resume the paused job; return once the printer prints again."""
        status = await self.status()
        if status.state is PrinterState.PAUSING:
            # OctoPrint ignores a resume until the pause is complete.
            status = await self._wait(
                "finish pausing",
                lambda status: status.state is PrinterState.PAUSED,
                pending={PrinterState.PAUSING},
            )
        if status.state is PrinterState.PRINTING:
            return status
        await self._command("api/job", {"command": "pause", "action": "resume"})
        return await self._wait(
            "resume",
            lambda status: status.state in (PrinterState.PRINTING, PrinterState.COMPLETE),
            pending={PrinterState.PAUSED},
        )

    async def cancel(self) -> PrinterStatus:
        """Cancel the job; return once the printer no longer prints."""
        await self._command("api/job", {"command": "cancel"})
        return await self._wait("cancel", lambda status: not status.busy, pending=BUSY_STATES)

    async def connect_printer(
        self,
        port: str | None = None,
        *,
        baudrate: int | None = None,
        profile: str | None = None,
    ) -> PrinterStatus:
        """Connect OctoPrint to its printer and return once the printer is ready.

        Without `port`, `baudrate` or `profile`, OctoPrint uses its own preferences
        (auto-detection where none are set). Raise `PrinterCommandError` if the printer
        does not come up, with OctoPrint's words for why.
        """
        body: dict[str, Any] = {"command": "connect"}
        if port is not None:
            body["port"] = port
        if baudrate is not None:
            body["baudrate"] = baudrate
        if profile is not None:
            body["printerProfile"] = profile
        await self._command("api/connection", body)
        return await self._wait(
            f"connect to the printer on {port or 'its default port'}",
            lambda status: status.state not in (PrinterState.DISCONNECTED, PrinterState.ERROR),
            pending={PrinterState.DISCONNECTED},
        )

    async def _wait(
        self,
        what: str,
        done: Callable[[PrinterStatus], bool],
        *,
        pending: Collection[PrinterState],
    ) -> PrinterStatus:
        """Poll the status until `done(status)`; fail once it leaves `pending` or time is up."""
        deadline = time.monotonic() + self._command_timeout
        while True:
            status = await self.status()
            if done(status):
                return status
            if status.state not in pending:
                raise PrinterCommandError(
                    f"OctoPrint at {self._url} did not {what}: the printer is {status.message}"
                )
            if time.monotonic() > deadline:
                raise PrinterCommandError(
                    f"OctoPrint at {self._url} did not {what} within "
                    f"{self._command_timeout:g} s: the printer is still {status.message}"
                )
            await asyncio.sleep(POLL_INTERVAL)

    async def _command(self, path: str, body: Mapping[str, Any]) -> None:
        """Send a command OctoPrint answers with 204; 409 means the printer's state refuses it."""
        _LOGGER.debug("Sending %s to %s", body.get("command"), self._url)
        await self._call("POST", path, json_body=body, accept=(HTTPStatus.NO_CONTENT,))

    async def _file(self, name: str) -> dict[str, Any] | None:
        """Return OctoPrint's entry of a file in local storage, None if there is none."""
        reply = await self._call(
            "GET", _file_path(name), accept=(HTTPStatus.OK, HTTPStatus.NOT_FOUND)
        )
        return reply.body if reply.status == HTTPStatus.OK else None

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        reply = await self._call("GET", path, params=params)
        if not isinstance(reply.body, dict):
            raise PrinterError(f"{self._url.joinpath(path)} did not answer as OctoPrint does")
        return reply.body

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: object = None,
        data: aiohttp.FormData | None = None,
        accept: Collection[int] = (HTTPStatus.OK,),
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> _Reply:
        return await _call(
            self._session,
            self._url,
            method,
            path,
            headers=self._headers,
            params=params,
            json_body=json_body,
            data=data,
            accept=accept,
            client_timeout=client_timeout or self._request_timeout,
        )

    def _absolute(self, url: str | None) -> str | None:
        """Resolve a camera URL as a browser on OctoPrint's page would; None if unset."""
        return str(self._url.join(URL(url))) if url else None


async def app_keys_available(session: aiohttp.ClientSession, url: str | URL) -> bool:
    """Return whether the server at `url` offers AppKeys pairing (OctoPrint's bundled plugin)."""
    reply = await _call(
        session,
        URL(str(url)),
        "GET",
        "plugin/appkeys/probe",
        accept=(HTTPStatus.NO_CONTENT, HTTPStatus.NOT_FOUND),
    )
    return reply.status == HTTPStatus.NO_CONTENT


async def request_app_key(
    session: aiohttp.ClientSession,
    url: str | URL,
    app: str,
    user: str | None = None,
) -> str:
    """Ask the server at `url` for an API key for `app`; return the token to poll with.

    OctoPrint shows the request to its logged-in users (only to `user`, if given) and
    asks them to allow it. Poll with `poll_app_key` at least every 5 seconds:
    OctoPrint drops a request nobody polls for that long.
    """
    body: dict[str, str] = {"app": app}
    if user:
        body["user"] = user
    reply = await _call(
        session,
        URL(str(url)),
        "POST",
        "plugin/appkeys/request",
        json_body=body,
        accept=(HTTPStatus.CREATED,),
    )
    location = reply.headers.get("Location")
    if not location or not (token := URL(location).name):
        raise PrinterError(f"{url} took the app key request but did not say where to poll")
    return token


async def poll_app_key(
    session: aiohttp.ClientSession,
    url: str | URL,
    app_token: str,
) -> str | None:
    """Return the API key once a user allowed the request, None while it is pending.

    Raise `PrinterAuthError` once the request was denied or has expired.
    """
    reply = await _call(
        session,
        URL(str(url)),
        "GET",
        f"plugin/appkeys/request/{app_token}",
        accept=(HTTPStatus.OK, HTTPStatus.ACCEPTED, HTTPStatus.NOT_FOUND),
    )
    if reply.status == HTTPStatus.ACCEPTED:
        return None
    if reply.status == HTTPStatus.NOT_FOUND:
        raise PrinterAuthError(f"{url} denied the app key request, or it expired")
    api_key = reply.body.get("api_key") if isinstance(reply.body, dict) else None
    if not api_key:
        raise PrinterError(f"{url} allowed the app key request but sent no key")
    return str(api_key)


async def _call(
    session: aiohttp.ClientSession,
    base: URL,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    json_body: object = None,
    data: aiohttp.FormData | None = None,
    accept: Collection[int] = (HTTPStatus.OK,),
    client_timeout: aiohttp.ClientTimeout = _DEFAULT_CLIENT_TIMEOUT,
) -> _Reply:
    """Make one request; return the reply if its status is in `accept`, else raise.

    401/403 raise `PrinterAuthError`, 409 `PrinterBusyError` (the printer's state
    refuses the request), anything else `PrinterError`, each with OctoPrint's own
    error text; no message names the key.
    """
    # Encoded here, segment by segment: file names may hold any character but "/".
    url = base.joinpath(path)
    where = f"{method} {url}"
    try:
        async with session.request(
            method,
            url.with_query(params),
            headers=headers,
            json=json_body,
            data=data,
            timeout=client_timeout,
        ) as response:
            raw = await response.read()
            status, reason, reply_headers = response.status, response.reason, response.headers
    except TimeoutError as err:
        raise PrinterConnectionError(f"OctoPrint at {base} did not answer in time") from err
    except aiohttp.ClientResponseError as err:
        # While OctoPrint starts, a stand-in server answers with a broken status line.
        raise PrinterConnectionError(
            f"OctoPrint at {base} sent a broken response; it may be starting"
        ) from err
    except aiohttp.ClientError as err:
        raise PrinterConnectionError(f"Cannot reach OctoPrint at {base}") from err
    body = _decode(raw)
    if status in accept:
        return _Reply(status, body, reply_headers)
    error = body.get("error") if isinstance(body, dict) else None
    message = str(error or reason)
    if status in _AUTH_STATUSES:
        raise PrinterAuthError(f"OctoPrint at {base} rejected the API key: {message}")
    if status == HTTPStatus.CONFLICT:
        raise PrinterBusyError(f"OctoPrint refused {where}: {message}")
    raise PrinterError(f"{where} answered HTTP {status}: {message}")


def _file_path(name: str) -> str:
    """Return the API path of a file in local storage; its folders are part of `name`."""
    return f"api/files/local/{name}"


def _decode(raw: bytes) -> Any:
    """Return a JSON body decoded, None for an empty or non-JSON body."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _state(flags: Mapping[str, Any], progress: float | None) -> PrinterState:
    """Map OctoPrint's state flags of a connected printer to KITTY's state."""
    for flag, state in _FLAG_STATES:
        if flags.get(flag):
            return state
    # OctoPrint keeps the last job's progress: 100 means it finished, not cancelled.
    if progress is not None and progress >= _COMPLETE_PERCENT:
        return PrinterState.COMPLETE
    return PrinterState.IDLE


def _temperature(reading: Mapping[str, Any] | None) -> Temperature:
    if not reading:
        return Temperature()
    return Temperature(actual=reading.get("actual"), target=reading.get("target"))


def _machine_code(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the G-code files among OctoPrint's file entries, from folders too."""
    files: list[dict[str, Any]] = []
    for entry in entries:
        if entry.get("type") == "folder":
            files += _machine_code(entry.get("children") or [])
        elif entry.get("type") == "machinecode":
            files.append(entry)
    return files


def _stored_file(entry: Mapping[str, Any]) -> StoredFile:
    date = entry.get("date")
    return StoredFile(
        name=entry.get("path") or entry["name"],
        size=entry.get("size"),
        modified=datetime.fromtimestamp(date, UTC) if date is not None else None,
    )


def _dig(body: Any, *keys: str) -> dict[str, Any]:
    """Return the object under `keys` in a JSON body; {} where any level is missing."""
    for key in keys:
        body = body.get(key) if isinstance(body, dict) else None
    return body if isinstance(body, dict) else {}
