"""The HTTP scaffold in-process on a real server: what services build their routes on."""

from collections.abc import AsyncIterator
from http import HTTPStatus

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
import pytest

from kittyai.http_server import TOKEN_NAME_KEY, ApiError, create_app, require_scope

TOKEN = "scaffold-token"
READER_TOKEN = "reader-token-0123456789"


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, CollectorRegistry]]:
    registry = CollectorRegistry()
    app = create_app(
        api_token=TOKEN,
        registry=registry,
        public_paths={"/open"},
        scoped_tokens={READER_TOKEN: ("dashboard", frozenset({"items:read"}))},
    )

    async def item(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["id"]})

    async def write_item(request: web.Request) -> web.Response:
        require_scope(request, "items:write")
        return web.json_response({"written_by": request[TOKEN_NAME_KEY]})

    async def read_item(request: web.Request) -> web.Response:
        require_scope(request, "items:read")
        return web.json_response({"read_by": request[TOKEN_NAME_KEY]})

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: hi\n\n")
        return response

    async def busy(_request: web.Request) -> web.Response:
        raise ApiError(
            HTTPStatus.TOO_MANY_REQUESTS, "busy", "Try again later", headers={"Retry-After": "3"}
        )

    async def moved(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/open")

    async def open_route(_request: web.Request) -> web.Response:
        return web.json_response({"open": True})

    app.router.add_get("/api/items/{id}", item)
    app.router.add_get("/api/stream", stream)
    app.router.add_post("/api/scoped", write_item)
    app.router.add_get("/api/scoped", read_item)
    app.router.add_get("/api/busy", busy)
    app.router.add_get("/api/moved", moved)
    app.router.add_get("/open", open_route)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    yield test_server, registry
    await test_server.close()


async def test_streamed_responses_carry_the_request_id(
    server: tuple[TestServer, CollectorRegistry],
) -> None:
    test_server, _ = server
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
        session.get(test_server.make_url("/api/stream"), headers={"X-Request-ID": "s1"}) as resp,
    ):
        assert resp.headers["X-Request-ID"] == "s1"
        assert await resp.read() == b"data: hi\n\n"


async def test_api_errors_become_json_with_their_headers(
    server: tuple[TestServer, CollectorRegistry],
) -> None:
    test_server, _ = server
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"bearer {TOKEN}"}) as session,
        session.get(test_server.make_url("/api/busy")) as response,
    ):
        assert response.status == 429
        assert response.headers["Retry-After"] == "3"
        body = await response.json()
    assert body == {
        "error": {"code": "busy", "message": "Try again later"},
        "correlation_id": response.headers["X-Request-ID"],
    }


async def test_redirects_are_not_errors(server: tuple[TestServer, CollectorRegistry]) -> None:
    test_server, _ = server
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
        session.get(test_server.make_url("/api/moved")) as response,
    ):
        assert response.status == 200
        assert await response.json() == {"open": True}


async def test_metrics_label_routes_not_paths(
    server: tuple[TestServer, CollectorRegistry],
) -> None:
    test_server, registry = server
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        for path in ("/api/items/1", "/api/items/2", "/scan/1", "/scan/2"):
            async with session.get(test_server.make_url(path)):
                pass

    def count(route: str, status: str) -> float | None:
        return registry.get_sample_value(
            "kitty_http_requests_total", {"method": "GET", "route": route, "status": status}
        )

    assert count("/api/items/{id}", "200") == 2
    assert count("unmatched", "404") == 2


async def test_scoped_tokens_may_do_only_what_their_scopes_allow(
    server: tuple[TestServer, CollectorRegistry],
) -> None:
    test_server, _ = server
    url = test_server.make_url("/api/scoped")
    async with aiohttp.ClientSession() as session:
        reader = {"Authorization": f"Bearer {READER_TOKEN}"}
        async with session.get(url, headers=reader) as response:
            assert response.status == HTTPStatus.OK
            assert await response.json() == {"read_by": "dashboard"}
        async with session.post(url, headers=reader) as response:
            assert response.status == HTTPStatus.FORBIDDEN
            body = await response.json()
            assert body["error"]["code"] == "missing_scope"
            assert "items:write" in body["error"]["message"]
        # The service's own token may do everything.
        async with session.post(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == HTTPStatus.OK
            assert await response.json() == {"written_by": "api_token"}
        # A scoped token's prefix is no token at all.
        prefix = {"Authorization": f"Bearer {READER_TOKEN[:-1]}"}
        async with session.get(url, headers=prefix) as response:
            assert response.status == HTTPStatus.UNAUTHORIZED
