"""A protocol-faithful Supervisor: real HTTP on 127.0.0.1, the Supervisor's envelope.

It serves the calls a KITTY app makes, requires the app's bearer token like the
real Supervisor does, and records discovery announcements and withdrawals.
"""

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
import uuid

from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

APP_HOSTNAME = "local-kitty-router"


@dataclass
class FakeSupervisor:
    """The Supervisor as an app sees it, with a broker on `mqtt_port`."""

    token: str
    mqtt_port: int
    mqtt_password: str = "supervisor-mqtt-secret"
    # How many discovery POSTs to refuse before accepting, to exercise retries.
    refuse_discovery: int = 0
    announced: dict[str, dict[str, Any]] = field(default_factory=dict)
    withdrawn: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        """Return the base URL, what SUPERVISOR_URL would be."""
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def start(self) -> None:
        app = web.Application(middlewares=[self._require_token])
        app.router.add_get("/services/mqtt", self._mqtt_service)
        app.router.add_get("/addons/self/info", self._self_info)
        app.router.add_post("/discovery", self._announce)
        app.router.add_delete("/discovery/{uuid}", self._withdraw)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    @web.middleware
    async def _require_token(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path}")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(HTTPStatus.UNAUTHORIZED, "Invalid token for access")
        return await handler(request)

    async def _mqtt_service(self, _request: web.Request) -> web.Response:
        return _ok(
            {
                "addon": "core_mosquitto",
                "host": "127.0.0.1",
                "port": str(self.mqtt_port),
                "ssl": False,
                "username": "addons",
                "password": self.mqtt_password,
                "protocol": "3.1.1",
            }
        )

    async def _self_info(self, _request: web.Request) -> web.Response:
        return _ok({"name": "KITTY Router", "slug": "kitty_router", "hostname": APP_HOSTNAME})

    async def _announce(self, request: web.Request) -> web.Response:
        if self.refuse_discovery:
            self.refuse_discovery -= 1
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "Discovery is busy")
        message_uuid = uuid.uuid4().hex
        self.announced[message_uuid] = await request.json()
        return _ok({"uuid": message_uuid})

    async def _withdraw(self, request: web.Request) -> web.Response:
        message_uuid = request.match_info["uuid"]
        if message_uuid not in self.announced:
            return _error(HTTPStatus.BAD_REQUEST, "Discovery message not found")
        self.withdrawn.append(message_uuid)
        return _ok(None)


def _ok(data: Any) -> web.Response:
    return web.json_response({"result": "ok", "data": data})


def _error(status: HTTPStatus, message: str) -> web.Response:
    return web.json_response({"result": "error", "message": message}, status=status)
