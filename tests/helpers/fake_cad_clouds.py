"""Protocol-faithful fakes of the paid CAD clouds: Zoo's text-to-CAD and Tripo's apiv3.

Each fake is a real aiohttp server on 127.0.0.1 speaking its vendor's wire format (bearer
authentication with the vendor's refusal body, asynchronous requests that move on with
every poll, the vendor's result shapes), serving real geometry made by CadQuery:

    async with FakeZoo(api_key="zoo-test-key", polls_to_finish=2) as zoo:
        ... configure the provider with zoo.url ...
        zoo.paths()  # ["/ai/text-to-cad/step", "/user/text-to-cad/<id>", ...]

    async with FakeTripo(api_key="tsk_test", stl=open_mesh) as tripo: ...

Zoo answers a text-to-CAD request with the STEP of an L bracket (or `step`), base64
in `outputs["source.step"]`; Tripo converts its model to a binary STL (the bracket, or
`stl`) served at a signed download URL that, like Tripo's storage, wants no key.
Scriptable failures: `failure` (the request or task fails with that message), `outage`
(every API call answers that HTTP status, e.g. 503, until cleared),
`FakeZoo(rest_create_removed=True)` (create answers 404 as a server without the REST
route would) and any `step`/`stl`, such as `without_last_triangle(...)` for an open mesh.
"""

from abc import ABC, abstractmethod
import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
import secrets
import struct
import tempfile
from typing import Any, Self
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler
import cadquery as cq

from tests.helpers.loopback_server import RecordingServer

_STL_HEADER_BYTES = 80
_STL_TRIANGLE_BYTES = 50


def bracket(
    *,
    length_mm: float = 60.0,
    width_mm: float = 30.0,
    height_mm: float = 40.0,
    thickness_mm: float = 5.0,
    hole_mm: float = 5.0,
) -> cq.Workplane:
    """Return an L bracket: a base and an upright leg, a screw hole through each."""
    base = (
        cq.Workplane("XY")
        .box(length_mm, width_mm, thickness_mm, centered=(False, True, False))
        .faces(">Z")
        .workplane()
        .center(length_mm * 0.6, 0)
        .hole(hole_mm)
    )
    leg = (
        cq.Workplane("YZ")
        .box(width_mm, height_mm, thickness_mm, centered=(True, False, False))
        .faces(">X")
        .workplane()
        .center(0, height_mm * 0.6)
        .hole(hole_mm)
    )
    return base.union(leg)


def step_bytes(part: cq.Workplane) -> bytes:
    """Return `part` as a STEP file."""
    return _exported(part, "part.step")


def stl_bytes(part: cq.Workplane) -> bytes:
    """Return `part` as a binary STL file."""
    return _exported(part, "part.stl")


def without_last_triangle(stl: bytes) -> bytes:
    """Return a binary STL with its last triangle gone: a mesh with a hole, not watertight."""
    (count,) = struct.unpack_from("<I", stl, _STL_HEADER_BYTES)
    triangles = stl[_STL_HEADER_BYTES + 4 : _STL_HEADER_BYTES + 4 + count * _STL_TRIANGLE_BYTES]
    return (
        stl[:_STL_HEADER_BYTES]
        + struct.pack("<I", count - 1)
        + triangles[: (count - 1) * _STL_TRIANGLE_BYTES]
    )


def _exported(part: cq.Workplane, name: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        cq.exporters.export(part, str(path))
        return path.read_bytes()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _FakeCloud(RecordingServer, ABC):
    """A real HTTP server that records every request and checks the vendor's bearer key."""

    def __init__(self, *, api_key: str, polls_to_finish: int, failure: str | None) -> None:
        """Serve on a free port once entered."""
        super().__init__()
        self.api_key = api_key
        # Polls a request answers as still running before it settles.
        self.polls_to_finish = polls_to_finish
        self.failure = failure
        # An HTTP status every API request answers with while set: the vendor is down.
        self.outage: int | None = None

    async def __aenter__(self) -> Self:
        """Make the geometry, then start serving."""
        await self._prepare()
        return await super().__aenter__()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_authenticate])
        self._add_routes(app.router)
        return app

    @abstractmethod
    async def _prepare(self) -> None:
        """Make what the fake serves."""

    @abstractmethod
    def _add_routes(self, router: web.UrlDispatcher) -> None:
        """Route the vendor's endpoints."""

    @abstractmethod
    def _error_response(self, status: int, message: str) -> web.Response:
        """Return an error in the vendor's body."""

    def _public(self, path: str) -> bool:
        """Return whether `path` is served without the key (a signed download)."""
        return False

    @web.middleware
    async def _record_and_authenticate(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        await self._record(request)
        if not self._public(request.path):
            if self.outage is not None:
                return self._error_response(self.outage, "The service is temporarily unavailable.")
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                return self._error_response(401, "no bearer token in the Authorization header")
            if header.removeprefix("Bearer ") != self.api_key:
                return self._error_response(401, "the API token is not valid")
        return await handler(request)


# --------------------------------------------------------------------------- Zoo

_ZOO_FORMATS = frozenset({"fbx", "glb", "gltf", "obj", "ply", "step", "stl"})
_ZOO_KCL = "// Generated by the fake text-to-CAD\nbracket = startSketchOn(XY)\n"


@dataclass(slots=True)
class _ZooRequest:
    record: dict[str, Any]
    polls: int = 0


class FakeZoo(_FakeCloud):
    """Zoo: `GET /user`, `POST /ai/text-to-cad/{format}`, and its status at
    `GET /user/text-to-cad/{id}` and `GET /async/operations/{id}`."""

    def __init__(
        self,
        *,
        api_key: str,
        polls_to_finish: int = 2,
        failure: str | None = None,
        rest_create_removed: bool = False,
        step: bytes | None = None,
    ) -> None:
        """Serve `step` (default: the bracket) for every completed request."""
        super().__init__(api_key=api_key, polls_to_finish=polls_to_finish, failure=failure)
        self.rest_create_removed = rest_create_removed
        self.step = step
        self._requests: dict[str, _ZooRequest] = {}

    async def _prepare(self) -> None:
        if self.step is None:
            self.step = step_bytes(bracket())

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/user", self._user)
        router.add_post("/ai/text-to-cad/{output_format}", self._create)
        router.add_get("/user/text-to-cad/{id}", self._status)
        router.add_get("/async/operations/{id}", self._status)

    def _error_response(self, status: int, message: str) -> web.Response:
        return _zoo_error(status, "Unauthorized" if status == 401 else "InternalError", message)

    async def _user(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, self.api_key)),
                "email": "maker@example.com",
                "name": "Workshop Maker",
                "created_at": "2025-01-15T09:30:00Z",
                "updated_at": _now(),
            }
        )

    async def _create(self, request: web.Request) -> web.Response:
        if self.rest_create_removed:
            return _zoo_error(404, "Not Found", "Not Found")
        output_format = request.match_info["output_format"]
        if output_format not in _ZOO_FORMATS:
            return _zoo_error(400, "BadRequest", f"unknown output format {output_format!r}")
        body = self.requests[-1].body
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return _zoo_error(400, "BadRequest", "prompt: must not be empty")
        now = _now()
        record = {
            "type": "text_to_cad",
            "id": str(uuid.uuid4()),
            "conversation_id": str(uuid.uuid4()),
            "user_id": str(uuid.uuid5(uuid.NAMESPACE_URL, self.api_key)),
            "prompt": prompt,
            "output_format": output_format,
            "model": "kcl",
            "model_version": "fake-2026.10",
            "kcl_version": "0.2.80",
            "status": "queued",
            "outputs": {},
            "code": None,
            "error": None,
            "feedback": None,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "completed_at": None,
        }
        self._requests[record["id"]] = _ZooRequest(record)
        return web.json_response(record, status=201)

    async def _status(self, request: web.Request) -> web.Response:
        entry = self._requests.get(request.match_info["id"])
        if entry is None:
            return _zoo_error(404, "NotFound", "Not Found")
        entry.polls += 1
        record = entry.record
        now = _now()
        if record["status"] in {"completed", "failed"}:
            return web.json_response(record)
        record["updated_at"] = now
        record["started_at"] = record["started_at"] or now
        if entry.polls < self.polls_to_finish:
            record["status"] = "in_progress"
        elif self.failure is not None:
            record |= {"status": "failed", "error": self.failure, "completed_at": now}
        else:
            assert self.step is not None
            encoded = base64.urlsafe_b64encode(self.step).decode().rstrip("=")
            record |= {
                "status": "completed",
                "code": _ZOO_KCL,
                "outputs": {f"source.{record['output_format']}": encoded},
                "completed_at": now,
            }
        return web.json_response(record)


def _zoo_error(status: int, code: str, message: str) -> web.Response:
    """Return an error the way Zoo's API (dropshot) writes them."""
    return web.json_response(
        {"error_code": code, "message": message, "request_id": str(uuid.uuid4())}, status=status
    )


# --------------------------------------------------------------------------- Tripo

_TRIPO_UNSETTLED = frozenset({"queued", "running"})
_TRIPO_FORMATS = frozenset({"GLTF", "GLB", "USDZ", "FBX", "OBJ", "STL", "3MF"})
_TRIPO_AUTH_FAILED = 1002
_TRIPO_BAD_PARAMETER = 2002
_TRIPO_TASK_NOT_FOUND = 2001
_TRIPO_GENERATION_FAILED = 2006
_TRIPO_SERVER_ERROR = 1000


@dataclass(slots=True)
class _TripoTask:
    task_id: str
    type: str
    input: dict[str, Any]
    created: int
    polls: int = 0
    output: dict[str, Any] = field(default_factory=dict)
    status: str = "queued"
    error_msg: str | None = None


class FakeTripo(_FakeCloud):
    """Tripo's apiv3: generation, conversion, tasks, balance, and signed model downloads."""

    def __init__(
        self,
        *,
        api_key: str,
        polls_to_finish: int = 2,
        failure: str | None = None,
        failure_status: str = "failed",
        stl: bytes | None = None,
    ) -> None:
        """Convert every model to `stl` (default: the bracket, a binary STL)."""
        super().__init__(api_key=api_key, polls_to_finish=polls_to_finish, failure=failure)
        self.failure_status = failure_status
        self.stl = stl
        self._tasks: dict[str, _TripoTask] = {}
        # Signed download path → the file's bytes.
        self._files: dict[str, bytes] = {}

    async def _prepare(self) -> None:
        if self.stl is None:
            self.stl = stl_bytes(bracket())

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v3/account/balance", self._balance)
        router.add_post("/v3/generation/text-to-model", self._text_to_model)
        router.add_post("/v3/models/convert", self._convert)
        router.add_get("/v3/tasks/{task_id}", self._task)
        router.add_get("/signed/{task_id}/{name}", self._download)

    def _public(self, path: str) -> bool:
        return path.startswith("/signed/")

    def _error_response(self, status: int, message: str) -> web.Response:
        if status == 401:
            return _tripo_error(status, _TRIPO_AUTH_FAILED, "Authentication failed", message)
        return _tripo_error(status, _TRIPO_SERVER_ERROR, message, "Please try again later.")

    async def _balance(self, _request: web.Request) -> web.Response:
        return web.json_response({"code": 0, "data": {"balance": 600.0, "frozen": 0.0}})

    async def _text_to_model(self, _request: web.Request) -> web.Response:
        body = self.requests[-1].body
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return _tripo_error(400, _TRIPO_BAD_PARAMETER, "Invalid parameter", "prompt")
        return self._created("text_to_model", body)

    async def _convert(self, _request: web.Request) -> web.Response:
        body = self.requests[-1].body
        source = self._tasks.get(str(body.get("input")))
        if source is None or source.status != "success":
            return _tripo_error(
                400, _TRIPO_BAD_PARAMETER, "Invalid parameter", "input: no successful task"
            )
        if body.get("format") not in _TRIPO_FORMATS:
            return _tripo_error(400, _TRIPO_BAD_PARAMETER, "Invalid parameter", "format")
        return self._created("convert_model", body)

    def _created(self, task_type: str, body: dict[str, Any]) -> web.Response:
        task = _TripoTask(
            task_id=str(uuid.uuid4()),
            type=task_type,
            input=body,
            created=int(datetime.now(UTC).timestamp()),
        )
        self._tasks[task.task_id] = task
        return web.json_response({"code": 0, "data": {"task_id": task.task_id}})

    async def _task(self, request: web.Request) -> web.Response:
        task = self._tasks.get(request.match_info["task_id"])
        if task is None:
            return _tripo_error(404, _TRIPO_TASK_NOT_FOUND, "Task not found", "task_id")
        task.polls += 1
        if task.status in _TRIPO_UNSETTLED:
            if task.polls >= self.polls_to_finish:
                self._settle(task)
            else:
                task.status = "running"
        data: dict[str, Any] = {
            "task_id": task.task_id,
            "type": task.type,
            "status": task.status,
            "input": task.input,
            "output": task.output,
            "create_time": task.created,
        }
        if task.status in _TRIPO_UNSETTLED:
            left = self.polls_to_finish - task.polls
            data |= {
                "progress": 100 * task.polls // self.polls_to_finish,
                "running_left_time": 3 * left,
                "queuing_num": 0,
            }
        else:
            data["progress"] = 100
        if task.error_msg is not None:
            data |= {"error_code": _TRIPO_GENERATION_FAILED, "error_msg": task.error_msg}
        return web.json_response({"code": 0, "data": data})

    def _settle(self, task: _TripoTask) -> None:
        """Finish `task`: the scripted failure for a generation, else its output."""
        if task.type == "text_to_model" and self.failure is not None:
            task.status = self.failure_status
            task.error_msg = self.failure
            return
        task.status = "success"
        signature = secrets.token_hex(8)
        if task.type == "text_to_model":
            # The fake does not serve the GLB: clients convert to STL, as they must for printing.
            task.output = {
                "model": f"{self.url}/signed/{task.task_id}/model.glb?auth_key={signature}",
                "rendered_image": f"{self.url}/signed/{task.task_id}/render.webp",
            }
            return
        assert self.stl is not None
        name = f"model.{str(task.input['format']).lower()}"
        self._files[f"/signed/{task.task_id}/{name}"] = self.stl
        task.output = {"model": f"{self.url}/signed/{task.task_id}/{name}?auth_key={signature}"}

    async def _download(self, request: web.Request) -> web.Response:
        content = self._files.get(request.path)
        if content is None:
            return web.Response(status=404, text="NoSuchKey")
        return web.Response(body=content, content_type="model/stl")


def _tripo_error(status: int, code: int, message: str, suggestion: str) -> web.Response:
    """Return an error in Tripo's envelope."""
    return web.json_response(
        {"code": code, "message": message, "suggestion": suggestion}, status=status
    )
