"""Where ingested documents come from: the share folder and URLs on the local network."""

from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path

from aiohttp import web
import pytest

from kittyai.contract.rag import SourceKind
from kittyai.http_server import ApiError
from kittyai.rag.sources import Network, fetch_url, parse_networks, read_share_file
from tests.helpers.loopback_server import LoopbackServer

MB = 1_048_576
MANUAL = b"# Original Prusa MK4\n\nThe heatbed reaches 120 \xc2\xb0C.\n"
LOCAL = parse_networks(["127.0.0.0/8", "::1/128"])
HOME_LAN_ONLY = parse_networks(["10.0.0.0/8"])


class DocsServer(LoopbackServer):
    """A small web server on the LAN: a wiki with manuals, some redirects and a big file."""

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/docs/mk4.md", self._manual)
        app.router.add_get("/docs/latest", self._redirect_to_manual)
        app.router.add_get("/away", self._redirect_away)
        app.router.add_get("/loop", self._loop)
        app.router.add_get("/big", self._big_streamed)
        app.router.add_get("/wiki/heatbed", self._wiki_page)
        return app

    async def _manual(self, _request: web.Request) -> web.Response:
        return web.Response(body=MANUAL, content_type="text/markdown", charset="utf-8")

    async def _redirect_to_manual(self, _request: web.Request) -> web.Response:
        raise web.HTTPFound("/docs/mk4.md")

    async def _redirect_away(self, _request: web.Request) -> web.Response:
        raise web.HTTPFound("http://10.1.2.3/manual.pdf")

    async def _loop(self, _request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def _big_streamed(self, request: web.Request) -> web.StreamResponse:
        # Chunked, with no Content-Length: only counting while reading finds the size.
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for _ in range(40):
            await response.write(b"x" * 65536)
        await response.write_eof()
        return response

    async def _wiki_page(self, _request: web.Request) -> web.Response:
        return web.Response(text="<h1>Heatbed</h1><p>120 °C</p>", content_type="text/html")


@pytest.fixture
async def docs() -> AsyncIterator[DocsServer]:
    async with DocsServer() as server:
        yield server


@pytest.fixture
def share(tmp_path: Path) -> Path:
    share = tmp_path / "share"
    (share / "kitty" / "manuals").mkdir(parents=True)
    (share / "kitty" / "manuals" / "mk4.md").write_bytes(MANUAL)
    (tmp_path / "secrets.txt").write_text("the door code is 1234")
    return share


async def refused(coro: object) -> ApiError:
    with pytest.raises(ApiError) as raised:
        await coro  # type: ignore[misc]
    return raised.value


# --------------------------------------------------------------------------- share


async def test_a_file_of_the_share_is_read_with_its_path_as_source(share: Path) -> None:
    document = await read_share_file(share, "kitty/./manuals/mk4.md", MB)

    assert document.content == MANUAL
    assert document.source == "share:kitty/manuals/mk4.md"
    assert document.source_kind is SourceKind.SHARE
    assert (document.name, document.media_type) == ("mk4.md", None)


async def test_a_link_inside_the_share_is_followed(share: Path) -> None:
    (share / "latest.md").symlink_to(share / "kitty" / "manuals" / "mk4.md")

    document = await read_share_file(share, "latest.md", MB)

    assert (document.content, document.source) == (MANUAL, "share:latest.md")


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/etc/passwd", HTTPStatus.UNPROCESSABLE_CONTENT, "absolute_path"),
        ("~/notes.txt", HTTPStatus.UNPROCESSABLE_CONTENT, "absolute_path"),
        ("kitty/../../secrets.txt", HTTPStatus.UNPROCESSABLE_CONTENT, "parent_path"),
        ("kitty/manuals", HTTPStatus.UNPROCESSABLE_CONTENT, "not_a_file"),
        (".", HTTPStatus.UNPROCESSABLE_CONTENT, "not_a_file"),
        ("kitty/manuals/mk3.md", HTTPStatus.NOT_FOUND, "file_not_found"),
        ("escape.txt", HTTPStatus.FORBIDDEN, "outside_share"),
        ("kitty/escape", HTTPStatus.FORBIDDEN, "outside_share"),
    ],
)
async def test_paths_that_are_no_file_of_the_share_are_refused(
    share: Path, path: str, status: HTTPStatus, code: str
) -> None:
    (share / "escape.txt").symlink_to(share.parent / "secrets.txt")
    (share / "kitty" / "escape").symlink_to(share.parent)

    error = await refused(read_share_file(share, path, MB))

    assert (error.status, error.code) == (status, code)
    assert "1234" not in error.message


async def test_a_file_above_the_size_limit_is_refused(share: Path) -> None:
    error = await refused(read_share_file(share, "kitty/manuals/mk4.md", len(MANUAL) - 1))

    assert (error.status, error.code) == (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large")
    assert "kitty/manuals/mk4.md" in error.message


# --------------------------------------------------------------------------- URLs


async def test_a_lan_url_is_fetched_with_its_type_and_name(docs: DocsServer) -> None:
    url = f"{docs.root}/docs/mk4.md#heatbed"

    document = await fetch_url(url, LOCAL, MB)

    assert document.content == MANUAL
    # The fragment names a place in the page, not another document.
    assert document.source == f"{docs.root}/docs/mk4.md"
    assert document.source_kind is SourceKind.URL
    assert (document.name, document.media_type) == ("mk4.md", "text/markdown; charset=utf-8")


async def test_a_page_without_suffix_keeps_its_content_type(docs: DocsServer) -> None:
    document = await fetch_url(f"{docs.root}/wiki/heatbed", LOCAL, MB)

    assert (document.name, document.media_type) == ("heatbed", "text/html; charset=utf-8")


async def test_a_host_name_is_checked_like_its_addresses(docs: DocsServer) -> None:
    url = f"http://localhost:{docs.root.rsplit(':', 1)[1]}/docs/mk4.md"

    document = await fetch_url(url, LOCAL, MB)
    error = await refused(fetch_url(url, HOME_LAN_ONLY, MB))

    assert (document.content, document.source) == (MANUAL, url)
    assert (error.status, error.code) == (HTTPStatus.FORBIDDEN, "url_not_local")


async def test_a_redirect_is_followed_and_keeps_the_asked_url_as_source(
    docs: DocsServer,
) -> None:
    document = await fetch_url(f"{docs.root}/docs/latest", LOCAL, MB)

    assert document.content == MANUAL
    assert document.source == f"{docs.root}/docs/latest"
    assert document.name == "mk4.md"


@pytest.mark.parametrize(
    ("path", "networks", "status", "code"),
    [
        # The server is on 127.0.0.1, which this home's networks do not include.
        ("/docs/mk4.md", HOME_LAN_ONLY, HTTPStatus.FORBIDDEN, "url_not_local"),
        # The first hop is local, the redirect is not: refused before connecting there.
        ("/away", LOCAL, HTTPStatus.FORBIDDEN, "url_not_local"),
        ("/loop", LOCAL, HTTPStatus.BAD_GATEWAY, "too_many_redirects"),
        ("/missing.pdf", LOCAL, HTTPStatus.BAD_GATEWAY, "url_fetch_failed"),
        ("/big", LOCAL, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large"),
    ],
)
async def test_urls_off_the_lan_failing_or_too_large_are_refused(
    docs: DocsServer, path: str, networks: list[Network], status: HTTPStatus, code: str
) -> None:
    error = await refused(fetch_url(f"{docs.root}{path}", networks, MB))

    assert (error.status, error.code) == (status, code)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/manual.pdf",
        "file:///etc/passwd",
        "http://admin:hunter2@127.0.0.1/manual.pdf",
        "not a url",
    ],
)
async def test_urls_that_are_not_plain_http_are_refused(url: str) -> None:
    error = await refused(fetch_url(url, LOCAL, MB))

    assert (error.status, error.code) == (HTTPStatus.UNPROCESSABLE_CONTENT, "unsupported_url")
    assert "hunter2" not in error.message
