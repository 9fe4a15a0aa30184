"""A protocol-faithful Supervisor: real HTTP on 127.0.0.1, the Supervisor's envelope.

It serves the calls a KITTY app makes, requires the app's bearer token like the
real Supervisor does, and records discovery announcements and withdrawals. It
also keeps other apps (versions, run state, a health URL each) and partial
backups of them, for the orchestrator's `app_update` runs, and refuses what the
app's role does not allow with the Supervisor's bare 403.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from http import HTTPStatus
import re
from typing import Any
import uuid

from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

APP_HOSTNAME = "local-kitty-router"
# Paths beyond the open set, by what they touch, and the roles allowed each (v1 role regexes).
_ROLE_AREAS: tuple[tuple[re.Pattern[str], frozenset[str]], ...] = (
    (re.compile(r"^/backups"), frozenset({"backup", "manager", "admin"})),
    (re.compile(r"^/store"), frozenset({"manager", "admin"})),
    (re.compile(r"^/addons/(?!self/)[^/]+/(?!info$)"), frozenset({"manager", "admin"})),
)


class Failure(StrEnum):
    """How an app misbehaves once it runs the version it was updated to."""

    # It crashes: the Supervisor reports state `error`.
    ERROR = "error"
    # It runs, but its health URL answers HTTP 500.
    UNHEALTHY = "unhealthy"


@dataclass
class FakeApp:
    """Another app on the Supervisor, with a health URL at `/health/<slug>` on the fake."""

    slug: str
    name: str
    version: str
    version_latest: str
    state: str = "started"
    fails_after_update: Failure | None = None
    # Set: updates are refused with this message.
    refuse_update: str | None = None
    # The version it was updated to, which misbehaves when `fails_after_update` says so.
    broken_version: str | None = None

    @property
    def broken(self) -> bool:
        """Return whether the app runs a version that misbehaves."""
        return self.broken_version is not None and self.version == self.broken_version

    @property
    def healthy(self) -> bool:
        """Return whether its health URL answers 200."""
        return self.state == "started" and not (
            self.broken and self.fails_after_update is Failure.UNHEALTHY
        )

    def start(self) -> None:
        """Start it as the Supervisor would: a broken version may crash."""
        crashes = self.broken and self.fails_after_update is Failure.ERROR
        self.state = "error" if crashes else "started"

    def info(self) -> dict[str, Any]:
        """Return `GET /addons/<slug>/info`'s data for it."""
        return {
            "name": self.name,
            "slug": self.slug,
            "state": self.state,
            "version": self.version,
            "version_latest": self.version_latest,
            "update_available": self.version != self.version_latest,
        }


@dataclass
class FakeBackup:
    """A partial backup: the name and the version of each app in it."""

    slug: str
    name: str
    apps: dict[str, str]


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
    # The app's role: `default`, `homeassistant`, `backup`, `manager` or `admin`.
    role: str = "manager"
    apps: dict[str, FakeApp] = field(default_factory=dict)
    backups: dict[str, FakeBackup] = field(default_factory=dict)
    # (backup slug, app slugs) of every partial restore, in order.
    restores: list[tuple[str, list[str]]] = field(default_factory=list)

    def add_app(self, app: FakeApp) -> FakeApp:
        """Install `app` on the fake."""
        self.apps[app.slug] = app
        return app

    def health_url(self, slug: str) -> str:
        """Return the health URL of an app."""
        return f"{self.url}/health/{slug}"

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
        app.router.add_get("/addons/{slug}/info", self._app_info)
        app.router.add_post("/addons/{slug}/restart", self._restart_app)
        app.router.add_post("/store/addons/{slug}/update", self._update_app)
        app.router.add_post("/backups/new/partial", self._partial_backup)
        app.router.add_get("/backups/{slug}/info", self._backup_info)
        app.router.add_post("/backups/{slug}/restore/partial", self._restore_partial)
        app.router.add_get("/health/{slug}", self._health)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    @web.middleware
    async def _require_token(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path}")
        if request.path.startswith("/health/"):
            # The app's own endpoint, not the Supervisor's API.
            return await handler(request)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(HTTPStatus.UNAUTHORIZED, "Invalid token for access")
        for pattern, roles in _ROLE_AREAS:
            if pattern.match(request.path) and self.role not in roles:
                raise web.HTTPForbidden
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

    def _app(self, request: web.Request) -> FakeApp:
        slug = request.match_info["slug"]
        if (app := self.apps.get(slug)) is None:
            raise _Refused(HTTPStatus.NOT_FOUND, f"Addon {slug} does not exist")
        return app

    async def _app_info(self, request: web.Request) -> web.Response:
        try:
            return _ok(self._app(request).info())
        except _Refused as refused:
            return refused.response

    async def _restart_app(self, request: web.Request) -> web.Response:
        try:
            app = self._app(request)
        except _Refused as refused:
            return refused.response
        app.start()
        return _ok(None)

    async def _update_app(self, request: web.Request) -> web.Response:
        try:
            app = self._app(request)
        except _Refused as refused:
            return refused.response
        if app.refuse_update is not None:
            return _error(HTTPStatus.BAD_REQUEST, app.refuse_update)
        if app.version == app.version_latest:
            return _error(HTTPStatus.BAD_REQUEST, f"No update available for add-on {app.slug}")
        app.version = app.version_latest
        if app.fails_after_update is not None:
            app.broken_version = app.version
        app.start()
        return _ok(None)

    async def _partial_backup(self, request: web.Request) -> web.Response:
        body = await request.json()
        missing = [slug for slug in body.get("addons", []) if slug not in self.apps]
        if missing:
            return _error(HTTPStatus.BAD_REQUEST, f"Addon {missing[0]} does not exist")
        backup = FakeBackup(
            slug=uuid.uuid4().hex[:8],
            name=body["name"],
            apps={slug: self.apps[slug].version for slug in body.get("addons", [])},
        )
        self.backups[backup.slug] = backup
        return _ok({"slug": backup.slug, "job_id": uuid.uuid4().hex})

    async def _backup_info(self, request: web.Request) -> web.Response:
        if (backup := self.backups.get(request.match_info["slug"])) is None:
            return _error(HTTPStatus.NOT_FOUND, "Backup does not exist")
        return _ok(
            {
                "slug": backup.slug,
                "name": backup.name,
                "date": "2026-10-22T14:30:00+00:00",
                "type": "partial",
                "addons": [
                    {"slug": slug, "name": self.apps[slug].name, "version": version}
                    for slug, version in backup.apps.items()
                ],
            }
        )

    async def _restore_partial(self, request: web.Request) -> web.Response:
        if (backup := self.backups.get(request.match_info["slug"])) is None:
            return _error(HTTPStatus.NOT_FOUND, "Backup does not exist")
        slugs: list[str] = (await request.json()).get("addons", [])
        if missing := [slug for slug in slugs if slug not in backup.apps]:
            return _error(HTTPStatus.BAD_REQUEST, f"Addon {missing[0]} is not in the backup")
        self.restores.append((backup.slug, slugs))
        for slug in slugs:
            app = self.apps[slug]
            app.version = backup.apps[slug]
            app.start()
        return _ok({"job_id": uuid.uuid4().hex})

    async def _health(self, request: web.Request) -> web.Response:
        app = self.apps.get(request.match_info["slug"])
        if app is None or not app.healthy:
            return web.Response(status=HTTPStatus.INTERNAL_SERVER_ERROR, text="unhealthy")
        return web.Response(text="ok")


class _Refused(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.response = _error(status, message)


def _ok(data: Any) -> web.Response:
    return web.json_response({"result": "ok", "data": data})


def _error(status: HTTPStatus, message: str) -> web.Response:
    return web.json_response({"result": "error", "message": message}, status=status)
