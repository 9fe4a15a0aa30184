"""KITTY's client for Moonraker, the API server of Klipper printers.

Calls go as JSON-RPC over one WebSocket, which also carries Moonraker's pushes;
uploads go over HTTP, the only way Moonraker takes files. Moonraker answers even
while Klippy (the printer's firmware host) is down, so a printer can be reachable
and still `DISCONNECTED`. No message of this module's errors contains the API key.
"""

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
import hashlib
from http import HTTPStatus
import inspect
import itertools
import json
import logging
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import aiohttp
from yarl import URL

from kittyai import __version__
from kittyai.printers.base import (
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
    StatusListener,
    StoredFile,
    Temperature,
)

_LOGGER = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
# How long a job command may take to show on the printer. Klippy answers a pause
# only once the G-code line it runs has finished, which can be a long move.
COMMAND_TIMEOUT = 60.0
# Moonraker replies to an upload only after it has parsed the file's metadata.
UPLOAD_READ_TIMEOUT = 300.0
# How often a command reads the printer back while it waits for the change.
POLL_INTERVAL = 0.25
# Klippy tells Moonraker when it becomes ready or goes away, but not when it comes
# up in error: while it is not ready, `listen` looks again this often.
NOT_READY_POLL = 5.0

# The Klippy objects and fields a status is made of; `listen` subscribes to the same.
# `pause_resume.is_paused` adds nothing: it turns true only after `print_stats`
# already says paused. Progress is the slicer's (M73) where the file reports it,
# else the share of the file read.
STATUS_OBJECTS: dict[str, list[str]] = {
    "webhooks": ["state", "state_message"],
    "print_stats": ["state", "message", "filename", "print_duration"],
    "display_status": ["progress"],
    "virtual_sdcard": ["progress"],
    "extruder": ["temperature", "target"],
    "heater_bed": ["temperature", "target"],
}

_JOB_STATES = {
    "standby": PrinterState.IDLE,
    "printing": PrinterState.PRINTING,
    "paused": PrinterState.PAUSED,
    "complete": PrinterState.COMPLETE,
    "cancelled": PrinterState.CANCELLED,
    "error": PrinterState.ERROR,
}
# Klippy states in which it runs no job but says why.
_KLIPPY_FAULTS = frozenset({"shutdown", "error"})
_AUTH_STATUSES = frozenset({HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN})
# JSON-RPC's "invalid params", which Moonraker also uses to refuse an unauthorized call.
_INVALID_PARAMS = -32602
_AUTH_MESSAGES = frozenset({"Unauthorized", "Invalid API Key"})
# Moonraker's push of its host's load, once a second: nothing a printer status needs.
_IGNORED_NOTIFICATIONS = frozenset({"notify_proc_stat_update"})

# Moonraker pings every 10 s and pushes its load every second: this much silence
# means the connection is dead although TCP did not notice.
SILENCE_TIMEOUT = 30.0
_SOCKET_ENDS = frozenset(
    {
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSING,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.ERROR,
    }
)

type _Notification = tuple[str, list[Any]]


class _RpcSocket:
    """One open WebSocket to Moonraker: requests matched to replies, pushes fanned out."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        # One queue per `listen`; None in a queue says the socket is gone.
        self._queues: set[asyncio.Queue[_Notification | None]] = set()
        self._reader = asyncio.create_task(self._read(), name="kitty-moonraker-reader")

    @property
    def open(self) -> bool:
        return not self._reader.done()

    async def request(self, method: str, params: Mapping[str, Any], limit: float) -> dict[str, Any]:
        """Send one JSON-RPC request and return Moonraker's reply, waiting `limit` seconds."""
        request_id = next(self._ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        try:
            await self.ws.send_json(
                {"jsonrpc": "2.0", "method": method, "params": dict(params), "id": request_id}
            )
            async with asyncio.timeout(limit):
                return await reply
        finally:
            self._pending.pop(request_id, None)

    def add_queue(self) -> asyncio.Queue[_Notification | None]:
        queue: asyncio.Queue[_Notification | None] = asyncio.Queue()
        if not self.open:
            queue.put_nowait(None)
        self._queues.add(queue)
        return queue

    def remove_queue(self, queue: asyncio.Queue[_Notification | None]) -> None:
        self._queues.discard(queue)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message.type is aiohttp.WSMsgType.TEXT:
                    self._dispatch(message.data)
                elif message.type in _SOCKET_ENDS:
                    break
        except TimeoutError:
            _LOGGER.debug("Moonraker went silent; dropping its connection")
            await self.ws.close()
        finally:
            lost = PrinterConnectionError("The connection to Moonraker was lost")
            for reply in self._pending.values():
                if not reply.done():
                    reply.set_exception(lost)
            for queue in self._queues:
                queue.put_nowait(None)

    def _dispatch(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            _LOGGER.debug("Moonraker sent a frame that is no JSON")
            return
        if not isinstance(message, dict):
            return
        request_id = message.get("id")
        if isinstance(request_id, int) and (reply := self._pending.get(request_id)) is not None:
            if not reply.done():
                reply.set_result(message)
            return
        method = message.get("method")
        if not isinstance(method, str) or method in _IGNORED_NOTIFICATIONS:
            return
        params = message.get("params")
        for queue in self._queues:
            queue.put_nowait((method, params if isinstance(params, list) else []))


class MoonrakerClient(PrinterClient):
    """Talks to one Moonraker server, with its API key where it needs one."""

    kind = PrinterKind.MOONRAKER
    pushes = True

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str | URL,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        command_timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        """Use `session` to reach Moonraker at `url`, e.g. `http://voron.local:7125`."""
        self._session = session
        self._url = URL(str(url))
        self._api_key = api_key
        self._headers = {"X-Api-Key": api_key} if api_key else {}
        self._timeout = timeout
        self._command_timeout = command_timeout
        self._socket: _RpcSocket | None = None
        self._connect_lock = asyncio.Lock()
        # The slicer's estimate of the running job, by file name: asked once per job.
        self._estimate: tuple[str, float | None] | None = None

    @property
    def url(self) -> URL:
        """Return Moonraker's base URL."""
        return self._url

    async def info(self) -> PrinterInfo:
        """Return who the server is; raise `PrinterAuthError` for a rejected key."""
        server = await self._call("server.info")
        unique_id = await self._instance_id() or str(self._url)
        name = self._url.host or str(self._url)
        if server.get("klippy_connected"):
            printer = await self._call_or_empty("printer.info")
            name = printer.get("hostname") or name
        stream_url, snapshot_url = await self._webcam_urls()
        return PrinterInfo(
            kind=self.kind,
            unique_id=unique_id,
            name=name,
            version=server.get("moonraker_version"),
            stream_url=stream_url,
            snapshot_url=snapshot_url,
        )

    async def status(self) -> PrinterStatus:
        """Return the printer's status now."""
        status, _ = await self._read_status()
        return status

    async def list_files(self) -> list[StoredFile]:
        """Return the G-code files the server holds, by name."""
        entries = await self._call("server.files.list", {"root": "gcodes"})
        files = [_stored_file(entry) for entry in entries if isinstance(entry, dict)]
        return sorted(files, key=lambda stored: stored.name)

    async def upload(self, path: Path, name: str | None = None) -> StoredFile:
        """Upload a local G-code file; `name` is its name on the server, folders allowed.

        Moonraker checks the file against its SHA-256 and refuses a damaged upload.
        """
        target = PurePosixPath(name or path.name)
        # Moonraker refuses a bad key before it reads the body and drops the connection
        # under the upload, which would look like a network failure: check the key first.
        await self._call("server.info")
        checksum = await asyncio.to_thread(_sha256, path)
        handle: BinaryIO = await asyncio.to_thread(path.open, "rb")
        try:
            form = aiohttp.FormData()
            form.add_field("root", "gcodes")
            if str(target.parent) != ".":
                form.add_field("path", str(target.parent))
            form.add_field("checksum", checksum)
            form.add_field(
                "file", handle, filename=target.name, content_type="application/octet-stream"
            )
            body = await self._post_form("/server/files/upload", form)
        finally:
            await asyncio.to_thread(handle.close)
        item = body.get("item") if isinstance(body, dict) else None
        if not isinstance(item, dict):
            raise PrinterError(f"{self._url} answered the upload without the stored file")
        return _stored_file(item)

    async def start(self, name: str) -> PrinterStatus:
        """Start printing a file the server holds, and return the printing status."""
        if name not in {stored.name for stored in await self.list_files()}:
            raise PrinterFileNotFoundError(f"{self._url} has no file named {name}")
        before, ready = await self._read_status()
        if not ready or before.busy:
            raise PrinterBusyError(f"Cannot start {name}: the printer is {before.state}")
        self._estimate = None

        def started(status: PrinterStatus) -> bool:
            if status.file != name:
                return False
            # A short job may already be over when it is first read back.
            return status.busy or (
                status.state in (PrinterState.COMPLETE, PrinterState.ERROR) and status != before
            )

        return await self._command(
            "printer.print.start", {"filename": name}, started, f"start {name}"
        )

    async def set_targets(
        self, *, nozzle: float | None = None, bed: float | None = None
    ) -> PrinterStatus:
        """Set the extruder and bed targets with M104/M140; return once Klippy shows them."""
        _, ready = await self._read_status()
        if not ready:
            raise PrinterBusyError("Cannot set the heater targets: Klippy is not ready")
        script = "\n".join(
            f"{gcode} S{target:g}"
            for gcode, target in (("M104", nozzle), ("M140", bed))
            if target is not None
        )
        return await self._command(
            "printer.gcode.script",
            {"script": script},
            lambda status: status.has_targets(nozzle=nozzle, bed=bed),
            "set the heater targets",
        )

    async def pause(self) -> PrinterStatus:
        """Pause the running job; return once the printer is paused."""
        current, _ = await self._read_status()
        if current.state is PrinterState.PAUSED:
            return current
        if current.state is not PrinterState.PRINTING:
            raise PrinterBusyError(f"Nothing to pause: the printer is {current.state}")
        return await self._command(
            "printer.print.pause",
            {},
            lambda status: status.state is PrinterState.PAUSED or not status.busy,
            "pause",
        )

    async def resume(self) -> PrinterStatus:
        """Resume the paused job; return once the printer prints again."""
        current, _ = await self._read_status()
        if current.state is PrinterState.PRINTING:
            return current
        if current.state is not PrinterState.PAUSED:
            raise PrinterBusyError(f"Nothing to resume: the printer is {current.state}")
        return await self._command(
            "printer.print.resume",
            {},
            lambda status: status.state is not PrinterState.PAUSED,
            "resume",
        )

    async def cancel(self) -> PrinterStatus:
        """Cancel the job; return once the printer no longer prints."""
        current, _ = await self._read_status()
        if not current.busy:
            raise PrinterBusyError(f"Nothing to cancel: the printer is {current.state}")
        return await self._command(
            "printer.print.cancel", {}, lambda status: not status.busy, "cancel"
        )

    async def listen(self, listener: StatusListener) -> None:
        """Deliver every status change to `listener` until cancelled.

        Raise `PrinterConnectionError` when the WebSocket drops; the caller reconnects.
        """
        socket = await self._connect()
        queue = socket.add_queue()
        try:
            objects = await self._subscribe()
            delivered: PrinterStatus | None = None
            while True:
                if objects is None:
                    status = await self.status()
                else:
                    status = await self._status_from(objects)
                if status != delivered:
                    result = listener(status)
                    if inspect.isawaitable(result):
                        await result
                    delivered = status
                objects = await self._next_objects(queue, objects)
        finally:
            socket.remove_queue(queue)

    async def close(self) -> None:
        """Close the WebSocket; the session stays the caller's."""
        async with self._connect_lock:
            socket, self._socket = self._socket, None
        if socket is not None:
            await socket.close()

    async def _next_objects(
        self,
        queue: asyncio.Queue[_Notification | None],
        objects: dict[str, dict[str, Any]] | None,
    ) -> dict[str, dict[str, Any]] | None:
        """Wait for the next push that changes the printer; return the objects after it.

        None stands for a Klippy that is not ready (no subscription).
        """
        while True:
            try:
                async with asyncio.timeout(None if objects is not None else NOT_READY_POLL):
                    notification = await queue.get()
            except TimeoutError:
                return await self._subscribe()
            if notification is None:
                raise PrinterConnectionError(f"Lost the connection to {self._url}")
            method, params = notification
            if method == "notify_status_update" and objects is not None:
                if params and isinstance(params[0], dict):
                    _merge(objects, params[0])
                    return objects
            elif method == "notify_klippy_ready":
                # Moonraker drops subscriptions with Klippy: subscribe afresh.
                return await self._subscribe()
            elif method in ("notify_klippy_shutdown", "notify_klippy_disconnected"):
                return None

    async def _subscribe(self) -> dict[str, dict[str, Any]] | None:
        """Subscribe to the status objects; return their state, None if Klippy is not ready."""
        server = await self._call("server.info")
        if server.get("klippy_state") != "ready":
            return None
        result = await self._call_or_empty("printer.objects.subscribe", {"objects": STATUS_OBJECTS})
        if "status" not in result:
            # Klippy went away between the two calls.
            return None
        return {name: dict(fields) for name, fields in result["status"].items()}

    async def _read_status(self) -> tuple[PrinterStatus, bool]:
        """Return the printer's status, and whether Klippy is ready for a job."""
        server = await self._call("server.info")
        klippy_state = server.get("klippy_state")
        if klippy_state == "ready":
            result = await self._call_or_empty("printer.objects.query", {"objects": STATUS_OBJECTS})
            if "status" not in result:
                # Klippy went away between the two calls.
                return PrinterStatus(state=PrinterState.DISCONNECTED), False
            return await self._status_from(result["status"]), True
        message = None
        if server.get("klippy_connected"):
            message = (await self._call_or_empty("printer.info")).get("state_message")
        state = PrinterState.ERROR if klippy_state in _KLIPPY_FAULTS else PrinterState.DISCONNECTED
        return PrinterStatus(state=state, message=message), False

    async def _status_from(self, objects: Mapping[str, Mapping[str, Any]]) -> PrinterStatus:
        """Translate Klippy's objects into a status, asking the slicer's estimate if needed."""
        status = _status(objects, estimated_time=None)
        if status.busy and status.time_left_s is None and status.file:
            status = _status(objects, estimated_time=await self._estimated_time(status.file))
        return status

    async def _estimated_time(self, filename: str) -> float | None:
        """Return the slicer's print time estimate of `filename`, if its metadata has one."""
        if self._estimate is not None and self._estimate[0] == filename:
            return self._estimate[1]
        metadata = await self._call_or_empty("server.files.metadata", {"filename": filename})
        estimate = metadata.get("estimated_time")
        seconds = float(estimate) if isinstance(estimate, int | float) and estimate > 0 else None
        self._estimate = (filename, seconds)
        return seconds

    async def _command(
        self,
        method: str,
        params: Mapping[str, Any],
        done: Callable[[PrinterStatus], bool],
        action: str,
    ) -> PrinterStatus:
        """Send a job command and read the printer back until `done` says it took effect.

        Moonraker may hold its reply until Klippy finished the current G-code line,
        so the printer is read back while the reply is pending, for at most
        `command_timeout` seconds in all.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._command_timeout
        # The reply may come later than the change shows; the deadline is what counts.
        request = asyncio.create_task(
            self._call(method, params, limit=self._command_timeout + self._timeout)
        )
        replied = False
        try:
            while True:
                if replied:
                    await asyncio.sleep(POLL_INTERVAL)
                else:
                    # Most commands show once Moonraker replies: read back right then.
                    await asyncio.wait({request}, timeout=POLL_INTERVAL)
                    if request.done():
                        request.result()
                        replied = True
                status, _ = await self._read_status()
                if done(status):
                    break
                if loop.time() >= deadline:
                    raise PrinterCommandError(
                        f"The printer did not {action} within {self._command_timeout:.0f} s;"
                        f" it is {status.state}"
                    )
        finally:
            if not request.done():
                request.cancel()
            # Collected so a late error of a command that took effect is not reported.
            await asyncio.gather(request, return_exceptions=True)
        if status.state is PrinterState.ERROR:
            raise PrinterCommandError(
                f"The printer failed to {action}: {status.message or 'Klippy reports an error'}"
            )
        return status

    async def _instance_id(self) -> str | None:
        """Return Moonraker's instance UUID, kept in its database across restarts."""
        item = await self._call_or_empty(
            "server.database.get_item", {"namespace": "moonraker", "key": "instance_id"}
        )
        value = item.get("value")
        return str(value) if value else None

    async def _webcam_urls(self) -> tuple[str | None, str | None]:
        """Return the stream and snapshot URLs of the first enabled webcam, absolute."""
        result = await self._call_or_empty("server.webcams.list")
        for webcam in result.get("webcams", []):
            if isinstance(webcam, dict) and webcam.get("enabled", True):
                return self._webcam_url(webcam.get("stream_url")), self._webcam_url(
                    webcam.get("snapshot_url")
                )
        return None, None

    def _webcam_url(self, value: object) -> str | None:
        """Resolve a webcam URL as the printer's web frontend would.

        Relative URLs such as `/webcam/?action=stream` are served by the frontend's
        web server on the host's default port, not by Moonraker's own port.
        """
        if not isinstance(value, str) or not value:
            return None
        frontend = URL.build(scheme=self._url.scheme, host=self._url.host or "")
        return str(frontend.join(URL(value)))

    async def _connect(self) -> _RpcSocket:
        """Return the open WebSocket, opening and identifying a new one if needed."""
        async with self._connect_lock:
            if self._socket is not None and self._socket.open:
                return self._socket
            if self._socket is not None:
                await self._socket.close()
                self._socket = None
            ws_url = self._url.with_scheme("wss" if self._url.scheme == "https" else "ws")
            try:
                async with asyncio.timeout(self._timeout):
                    # Silence is watched with a receive timeout, not aiohttp's heartbeat:
                    # aiohttp re-arms the heartbeat timer when it closes the socket.
                    ws = await self._session.ws_connect(
                        ws_url.join(URL("/websocket")),
                        headers=self._headers,
                        timeout=aiohttp.ClientWSTimeout(ws_receive=SILENCE_TIMEOUT, ws_close=5.0),
                    )
            except aiohttp.WSServerHandshakeError as err:
                if err.status in _AUTH_STATUSES:
                    raise PrinterAuthError(self._auth_message()) from None
                raise PrinterConnectionError(
                    f"{self._url} refused the WebSocket (HTTP {err.status})"
                ) from None
            except (aiohttp.ClientError, OSError, TimeoutError) as err:
                raise PrinterConnectionError(f"Cannot reach {self._url}") from err
            socket = _RpcSocket(ws)
            identity: dict[str, Any] = {
                "client_name": "KITTY",
                "version": __version__,
                "type": "other",
                "url": "https://github.com/kitty-brain/kitty",
            }
            if self._api_key:
                identity["api_key"] = self._api_key
            try:
                await self._request(socket, "server.connection.identify", identity, self._timeout)
            except BaseException:
                await socket.close()
                raise
            self._socket = socket
            return socket

    async def _call(
        self, method: str, params: Mapping[str, Any] | None = None, *, limit: float | None = None
    ) -> Any:
        """Call one JSON-RPC method and return its result, waiting `limit` seconds at most."""
        socket = await self._connect()
        return await self._request(socket, method, params or {}, limit or self._timeout)

    async def _call_or_empty(
        self, method: str, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Call a method whose refusal only means the answer is not there; {} then.

        Such as Klippy's methods while Klippy is away, or a file without metadata.
        """
        try:
            result = await self._call(method, params)
        except PrinterAuthError, PrinterConnectionError:
            raise
        except PrinterError:
            return {}
        return result if isinstance(result, dict) else {}

    async def _request(
        self, socket: _RpcSocket, method: str, params: Mapping[str, Any], limit: float
    ) -> Any:
        try:
            reply = await socket.request(method, params, limit)
        except TimeoutError:
            raise PrinterConnectionError(f"{self._url} did not answer {method} in time") from None
        except PrinterConnectionError:
            raise PrinterConnectionError(f"Lost the connection to {self._url}") from None
        except (aiohttp.ClientError, OSError) as err:
            raise PrinterConnectionError(f"Lost the connection to {self._url}") from err
        if "error" in reply:
            raise self._rpc_error(method, reply["error"])
        return reply.get("result")

    def _rpc_error(self, method: str, error: object) -> PrinterError:
        """Return the error a JSON-RPC error object stands for."""
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        text = self._scrub(str(message or "unknown error"))
        if code in _AUTH_STATUSES or (code == _INVALID_PARAMS and text in _AUTH_MESSAGES):
            return PrinterAuthError(self._auth_message())
        return PrinterError(f"{self._url} refused {method}: {text}")

    async def _post_form(self, path: str, form: aiohttp.FormData) -> object:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout, sock_read=UPLOAD_READ_TIMEOUT
        )
        try:
            async with self._session.post(
                self._url.join(URL(path)), data=form, headers=self._headers, timeout=timeout
            ) as response:
                if response.status in _AUTH_STATUSES:
                    raise PrinterAuthError(self._auth_message())
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                if response.status >= HTTPStatus.MULTIPLE_CHOICES:
                    message = f"{self._url}{path} answered HTTP {response.status}"
                    error = body.get("error") if isinstance(body, dict) else None
                    if isinstance(error, dict) and error.get("message"):
                        message = f"{message}: {self._scrub(str(error['message']))}"
                    raise PrinterError(message)
                return body
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as err:
            raise PrinterConnectionError(f"Cannot reach {self._url}") from err

    def _auth_message(self) -> str:
        if self._api_key:
            return f"{self._url} rejected the API key"
        return f"{self._url} requires an API key"

    def _scrub(self, text: str) -> str:
        """Return `text` without the API key, should Moonraker ever echo it."""
        return text.replace(self._api_key, "***") if self._api_key else text


def _status(
    objects: Mapping[str, Mapping[str, Any]], *, estimated_time: float | None
) -> PrinterStatus:
    """Translate Klippy's status objects into a `PrinterStatus`."""
    webhooks = objects.get("webhooks", {})
    if webhooks.get("state") in _KLIPPY_FAULTS:
        return PrinterStatus(
            state=PrinterState.ERROR,
            message=webhooks.get("state_message"),
            nozzle=_temperature(objects.get("extruder")),
            bed=_temperature(objects.get("heater_bed")),
        )
    stats = objects.get("print_stats", {})
    raw_state = stats.get("state")
    state = _JOB_STATES.get(raw_state, PrinterState.ERROR) if raw_state else PrinterState.IDLE
    message = stats.get("message") or None
    if raw_state and raw_state not in _JOB_STATES:
        message = f"Klippy reports the unknown job state {raw_state!r}"
    nozzle = _temperature(objects.get("extruder"))
    bed = _temperature(objects.get("heater_bed"))
    if state is PrinterState.IDLE:
        return PrinterStatus(state=state, message=message, nozzle=nozzle, bed=bed)
    fraction = _number(objects.get("display_status", {}).get("progress"))
    if fraction is None:
        fraction = _number(objects.get("virtual_sdcard", {}).get("progress"))
    duration = _number(stats.get("print_duration"))
    return PrinterStatus(
        state=state,
        message=message,
        file=stats.get("filename") or None,
        progress=None if fraction is None else round(min(max(fraction, 0.0), 1.0) * 100, 2),
        print_time_s=duration,
        time_left_s=_time_left(state, fraction, duration, estimated_time),
        nozzle=nozzle,
        bed=bed,
    )


def _time_left(
    state: PrinterState,
    fraction: float | None,
    duration: float | None,
    estimated_time: float | None,
) -> float | None:
    """Estimate the seconds a running job still needs.

    From the time spent and the share of the file done once there is some of both,
    else from the slicer's estimate.
    """
    if state not in (PrinterState.PRINTING, PrinterState.PAUSED):
        return None
    if fraction and duration and 0 < fraction <= 1:
        return round(duration / fraction - duration, 1)
    if estimated_time is not None:
        return round(max(estimated_time - (duration or 0.0), 0.0), 1)
    return None


def _temperature(heater: Mapping[str, Any] | None) -> Temperature:
    if not heater:
        return Temperature()
    return Temperature(
        actual=_number(heater.get("temperature")), target=_number(heater.get("target"))
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _merge(objects: dict[str, dict[str, Any]], delta: Mapping[str, Any]) -> None:
    """Apply a `notify_status_update` delta to the last full objects."""
    for name, fields in delta.items():
        if isinstance(fields, dict):
            objects.setdefault(name, {}).update(fields)


def _stored_file(entry: Mapping[str, Any]) -> StoredFile:
    modified = _number(entry.get("modified"))
    size = entry.get("size")
    return StoredFile(
        name=str(entry.get("path") or entry.get("filename")),
        size=size if isinstance(size, int) else None,
        modified=None if modified is None else datetime.fromtimestamp(modified, UTC),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
