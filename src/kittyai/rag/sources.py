"""Where `POST /api/ingest` gets a document's bytes: the share folder, a LAN URL, or an upload.

Each reader answers a `SourceDocument` or raises `ApiError` with its own code, so a
user learns exactly what was wrong with the path, the URL or the upload.

URLs are fetched only from the home's own networks: every address the host resolves
to must be in `url_networks`, and the connection goes to exactly those addresses (a
second DNS answer cannot point it elsewhere). Redirects are followed by hand, each
hop checked the same way.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
import ipaddress
from pathlib import Path, PurePosixPath
import socket

import aiohttp
from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from kittyai.contract.rag import DEFAULT_COLLECTION, NAME_PATTERN, SourceKind
from kittyai.http_server import ApiError
from kittyai.validation import describe_errors

SHARE_SOURCE_PREFIX = "share:"
UPLOAD_SOURCE_PREFIX = "upload:"
UPLOAD_FILE_FIELD = "file"
MAX_REDIRECTS = 5
FETCH_TIMEOUT_S = 60.0
_READ_CHUNK_BYTES = 1 << 16
# Form fields are short names and titles.
_MAX_FIELD_BYTES = 4096
# What a multipart body adds around the file: boundaries, headers and the form fields.
_MULTIPART_OVERHEAD_BYTES = 1 << 16
_REDIRECTS = frozenset(
    {
        HTTPStatus.MOVED_PERMANENTLY,
        HTTPStatus.FOUND,
        HTTPStatus.SEE_OTHER,
        HTTPStatus.TEMPORARY_REDIRECT,
        HTTPStatus.PERMANENT_REDIRECT,
    }
)
_UNPROCESSABLE = HTTPStatus.UNPROCESSABLE_CONTENT

type Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceDocument:
    """A document's bytes and what the knowledge base needs to know about them."""

    content: bytes
    # What users see and re-ingests match on: `share:<path>`, the URL, `upload:<name>`.
    source: str
    source_kind: SourceKind
    # The file name; its suffix tells the type when `media_type` is unset or says
    # nothing (application/octet-stream).
    name: str
    # As the server or the browser sent it, with its charset.
    media_type: str | None


class UploadForm(BaseModel):
    """The form fields sent beside an uploaded `file`."""

    model_config = ConfigDict(extra="forbid")

    collection: str = Field(default=DEFAULT_COLLECTION, pattern=NAME_PATTERN)
    project: str | None = Field(default=None, pattern=NAME_PATTERN)
    title: str | None = Field(default=None, min_length=1, max_length=200)


def _too_large(what: str, max_bytes: int) -> ApiError:
    return ApiError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "too_large",
        f"{what} is larger than the {max_bytes / 1_048_576:g} MB a document may have",
    )


# --------------------------------------------------------------------------- share


async def read_share_file(share_dir: Path, path: str, max_bytes: int) -> SourceDocument:
    """Return the file at `path`, relative to `share_dir`.

    Raises:
        ApiError: 422 for an absolute path, one with `..` or one naming no regular
            file; 403 for a link out of the share; 404 for a missing file; 413 for
            a file above `max_bytes`.
    """
    relative = PurePosixPath(path)
    if relative.is_absolute() or path.startswith("~"):
        raise ApiError(
            _UNPROCESSABLE,
            "absolute_path",
            f"{path!r} is absolute; give a path relative to the share folder,"
            " e.g. kitty/knowledge/mk4.pdf",
        )
    if ".." in relative.parts:
        raise ApiError(
            _UNPROCESSABLE, "parent_path", f"{path!r} uses '..'; paths stay inside the share"
        )
    if not relative.parts:
        raise ApiError(_UNPROCESSABLE, "not_a_file", "The path names the share folder itself")
    content = await asyncio.to_thread(_read_inside, share_dir, relative, max_bytes)
    return SourceDocument(
        content=content,
        source=f"{SHARE_SOURCE_PREFIX}{relative}",
        source_kind=SourceKind.SHARE,
        name=relative.name,
        media_type=None,
    )


def _read_inside(share_dir: Path, relative: PurePosixPath, max_bytes: int) -> bytes:
    root = share_dir.resolve()
    try:
        # Links are followed here, once; the file opened is the one checked.
        target = root.joinpath(relative).resolve(strict=True)
    except FileNotFoundError:
        raise ApiError(
            HTTPStatus.NOT_FOUND, "file_not_found", f"There is no {relative} in the share folder"
        ) from None
    except OSError as err:
        raise ApiError(
            _UNPROCESSABLE, "unreadable_file", f"{relative} cannot be read: {err.strerror}"
        ) from None
    if not target.is_relative_to(root):
        raise ApiError(
            HTTPStatus.FORBIDDEN,
            "outside_share",
            f"{relative} is a link to a file outside the share folder",
        )
    if target.is_dir():
        raise ApiError(_UNPROCESSABLE, "not_a_file", f"{relative} is a folder; name one file in it")
    # FIFOs and devices: opening one could block or never end.
    if not target.is_file():
        raise ApiError(_UNPROCESSABLE, "not_a_file", f"{relative} is not a regular file")
    with target.open("rb") as file:
        content = file.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise _too_large(str(relative), max_bytes)
    return content


# --------------------------------------------------------------------------- URLs


class _PinnedResolver(AbstractResolver):
    """Answers the addresses already checked, so the connection goes nowhere else."""

    def __init__(self, addresses: list[ResolveResult]) -> None:
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [{**address, "port": port or address["port"]} for address in self._addresses]

    async def close(self) -> None:
        """Nothing to release."""


async def fetch_url(url: str, networks: Sequence[Network], max_bytes: int) -> SourceDocument:
    """Return the document at `url`, an http(s) URL on one of `networks`.

    Raises:
        ApiError: 422 for a URL that is not http(s) or whose host is unknown, 403 for
            a host (or a redirect) off the local networks, 413 above `max_bytes`,
            502 when the server fails or answers no document, 504 when it is too slow.
    """
    requested = _checked_url(url)
    current = requested
    for _ in range(MAX_REDIRECTS + 1):
        addresses = await _local_addresses(current, networks)
        async with _get(current, addresses) as response:
            if response.status in _REDIRECTS and hdrs.LOCATION in response.headers:
                current = _checked_url(str(current.join(URL(response.headers[hdrs.LOCATION]))))
                continue
            if response.status != HTTPStatus.OK:
                raise ApiError(
                    HTTPStatus.BAD_GATEWAY,
                    "url_fetch_failed",
                    f"{current.host} answered HTTP {response.status} for {current.path}",
                )
            if response.content_length is not None and response.content_length > max_bytes:
                raise _too_large(str(requested), max_bytes)
            content = await _read_capped(
                response.content.iter_chunked(_READ_CHUNK_BYTES), max_bytes
            )
            if content is None:
                raise _too_large(str(requested), max_bytes)
            return SourceDocument(
                content=content,
                source=str(requested),
                source_kind=SourceKind.URL,
                name=_url_name(current),
                media_type=response.headers.get(hdrs.CONTENT_TYPE),
            )
    raise ApiError(
        HTTPStatus.BAD_GATEWAY,
        "too_many_redirects",
        f"{requested} redirects more than {MAX_REDIRECTS} times",
    )


def _checked_url(text: str) -> URL:
    try:
        url = URL(text)
    except ValueError:
        url = None
    if url is None or url.scheme not in {"http", "https"}:
        raise ApiError(_UNPROCESSABLE, "unsupported_url", f"{text!r} is no http(s) URL")
    if url.user is not None or url.password is not None:
        # They would be stored as the document's source, shown and logged.
        raise ApiError(
            _UNPROCESSABLE, "unsupported_url", "URLs with a user name or password are refused"
        )
    return url.with_fragment(None)


async def _local_addresses(url: URL, networks: Sequence[Network]) -> list[ResolveResult]:
    """Return every address `url`'s host has, if each is on one of `networks`."""
    host = url.host
    if not host:
        raise ApiError(_UNPROCESSABLE, "unsupported_url", f"{url} names no host")
    port = url.port or 0
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise ApiError(
            _UNPROCESSABLE, "unknown_host", f"{host} cannot be resolved to an address"
        ) from None
    addresses: list[ResolveResult] = []
    for family, _, proto, _, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not any(address in network for network in networks):
            raise ApiError(
                HTTPStatus.FORBIDDEN,
                "url_not_local",
                f"{host} is at {address}, outside the local networks URLs are fetched from"
                " (url_networks)",
            )
        addresses.append(
            ResolveResult(
                hostname=host,
                host=str(sockaddr[0]),
                port=port,
                family=family,
                proto=proto,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
        )
    return addresses


@asynccontextmanager
async def _get(url: URL, addresses: list[ResolveResult]) -> AsyncIterator[aiohttp.ClientResponse]:
    """GET `url` without following redirects, connecting only to `addresses`."""
    connector = aiohttp.TCPConnector(resolver=_PinnedResolver(addresses))
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    ) as session:
        try:
            async with session.get(url, allow_redirects=False) as response:
                yield response
        except TimeoutError:
            raise ApiError(
                HTTPStatus.GATEWAY_TIMEOUT, "url_timeout", f"{url.host} did not answer in time"
            ) from None
        except aiohttp.ClientError as err:
            raise ApiError(
                HTTPStatus.BAD_GATEWAY,
                "url_fetch_failed",
                f"{url.host} could not be fetched: {err}",
            ) from None


def _url_name(url: URL) -> str:
    return url.name or url.host or "document"


async def _read_capped(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes | None:
    """Return the chunks joined, or None as soon as they pass `max_bytes`."""
    content = bytearray()
    async for chunk in chunks:
        content += chunk
        if len(content) > max_bytes:
            return None
    return bytes(content)


# --------------------------------------------------------------------------- uploads


async def read_upload(request: web.Request, max_bytes: int) -> tuple[SourceDocument, UploadForm]:
    """Return the uploaded `file` of a multipart body, and the form fields beside it.

    Raises:
        ApiError: 413 for a file above `max_bytes`; 400 for a broken multipart body;
            422 for no file, a second one, a file without a name, unknown or invalid
            fields.
    """
    if (
        request.content_length is not None
        and request.content_length > max_bytes + _MULTIPART_OVERHEAD_BYTES
    ):
        raise _too_large("The upload", max_bytes)
    try:
        reader = await request.multipart()
        document, fields = await _read_parts(reader, max_bytes)
    except (AssertionError, ValueError) as err:
        # aiohttp's words for a body cut short or without its boundary.
        raise ApiError(HTTPStatus.BAD_REQUEST, "invalid_multipart", str(err)) from None
    if document is None:
        raise ApiError(_UNPROCESSABLE, "invalid_upload", "The form has no 'file' part")
    try:
        form = UploadForm.model_validate(fields)
    except ValidationError as err:
        raise ApiError(_UNPROCESSABLE, "invalid_request", describe_errors(err)) from None
    return document, form


async def _read_parts(
    reader: MultipartReader, max_bytes: int
) -> tuple[SourceDocument | None, dict[str, str]]:
    document: SourceDocument | None = None
    fields: dict[str, str] = {}
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ApiError(_UNPROCESSABLE, "invalid_multipart", "Nested multipart is not supported")
        if part.name == UPLOAD_FILE_FIELD:
            if document is not None:
                raise ApiError(_UNPROCESSABLE, "invalid_upload", "Send one file per request")
            document = await _upload_document(part, max_bytes)
        elif part.name in UploadForm.model_fields:
            value = await _read_capped(_part_chunks(part), _MAX_FIELD_BYTES)
            if value is None:
                raise ApiError(_UNPROCESSABLE, "invalid_request", f"{part.name} is too long")
            fields[part.name] = value.decode("utf-8", errors="replace")
        else:
            raise ApiError(
                _UNPROCESSABLE,
                "invalid_request",
                f"Unknown form field {part.name!r}; send file, collection, project and title",
            )
    return document, fields


async def _upload_document(part: BodyPartReader, max_bytes: int) -> SourceDocument:
    # Browsers on Windows have sent whole paths; only the name is the user's choice.
    name = (part.filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or not name.isprintable():
        raise ApiError(
            _UNPROCESSABLE, "invalid_upload", "The file part needs a file name, e.g. mk4.pdf"
        )
    content = await _read_capped(_part_chunks(part), max_bytes)
    if content is None:
        raise _too_large(name, max_bytes)
    return SourceDocument(
        content=content,
        source=f"{UPLOAD_SOURCE_PREFIX}{name}",
        source_kind=SourceKind.UPLOAD,
        name=name,
        media_type=part.headers.get(hdrs.CONTENT_TYPE),
    )


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(_READ_CHUNK_BYTES):
        yield chunk


def parse_networks(networks: Sequence[str]) -> list[Network]:
    """Return `networks` (CIDR strings) as networks; host bits set are allowed."""
    return [ipaddress.ip_network(network, strict=False) for network in networks]
