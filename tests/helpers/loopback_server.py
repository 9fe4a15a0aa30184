"""What every fake server of the tests shares: an aiohttp app on a free 127.0.0.1 port.

class FakeVendor(LoopbackServer):
    def _app(self) -> web.Application: ...

async with FakeVendor() as fake:
    ... call fake.url ...
    fake.requests[0].body
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
import json
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from tests.helpers.net import loopback_sockets


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request a fake received, before authentication was checked."""

    path: str
    headers: CIMultiDict[str]
    body: dict[str, Any]


class LoopbackServer:
    """Serves `_app()` on a free port of 127.0.0.1 while entered."""

    def __init__(self) -> None:
        """Serve once entered."""
        self._server: TestServer | None = None

    @property
    def root(self) -> str:
        """Return `http://127.0.0.1:<port>`."""
        assert self._server is not None, "the fake is not started"
        return str(self._server.make_url("")).rstrip("/")

    @property
    def url(self) -> str:
        """Return the base URL a client is configured with."""
        return self.root

    def _app(self) -> web.Application:
        """Return the application to serve."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        """Start serving."""
        self._server = TestServer(self._app(), host="127.0.0.1")
        # Handlers still sleeping on a scripted delay must not hold up the test's end.
        await self._server.start_server(shutdown_timeout=0.5)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop serving."""
        if self._server is not None:
            await self._server.close()


class RouteServer(LoopbackServer):
    """Serves a few GET routes, each by its own handler."""

    def __init__(
        self, routes: Mapping[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]
    ) -> None:
        """Serve the handler of each path once entered."""
        super().__init__()
        self._routes = routes

    def _app(self) -> web.Application:
        app = web.Application()
        for path, handler in self._routes.items():
            app.router.add_get(path, handler)
        return app


class RecordingServer(LoopbackServer):
    """A loopback server that keeps every request it received, with its JSON body."""

    def __init__(self) -> None:
        """Serve once entered, recording into `requests`."""
        super().__init__()
        self.requests: list[RecordedRequest] = []

    def paths(self) -> list[str]:
        """Return the paths of the requests received, in order."""
        return [request.path for request in self.requests]

    async def _record(self, request: web.Request) -> Any:
        """Record `request`; return its JSON body, or None when it is not JSON."""
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        self.requests.append(
            RecordedRequest(request.path, CIMultiDict(request.headers), body or {})
        )
        return body


@asynccontextmanager
async def serving_for_module[S: LoopbackServer](server: S) -> AsyncIterator[S]:
    """Serve `server` from a module fixture, for tests that share the module's event loop."""
    # The module's loop keeps its executor thread (aiomqtt connects through it) from test
    # to test; started now, Home Assistant's per-test thread check sees it as there before.
    await asyncio.get_running_loop().run_in_executor(None, int)
    with loopback_sockets():
        await server.__aenter__()
    try:
        yield server
    finally:
        await server.__aexit__(None, None, None)
