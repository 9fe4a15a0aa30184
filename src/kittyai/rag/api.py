"""The knowledge service's HTTP API (ingest, documents, search, projects, stats), and its wiring.

`POST /api/ingest` answers 201 with a new document (and its `Location`), 200 when
the source was known: `unchanged` (same content, nothing written) or `replaced`.
Documents KITTY cannot read answer with the knowledge base's own error code: 415
`unsupported_type`, 413 `too_large`, 422 for a corrupt, encrypted or empty one. An
embedder that cannot be reached answers 503, one that answers wrongly 502.

The statistics go out retained on `kitty/rag/stats` after start and after every
change, at most once a second however many changes a burst brings.
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http import HTTPStatus
import logging
from pathlib import Path
import re

from aiohttp import hdrs, web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kittyai.backoff import Backoff
from kittyai.chat_model import ChatModel
from kittyai.contract import RAG_STATS
from kittyai.contract.rag import (
    NAME_PATTERN,
    ArtifactLinkRequest,
    DocumentInfo,
    DocumentList,
    IngestOutcome,
    IngestRequest,
    KnowledgeStats,
    NoteRequest,
    ProjectList,
    SearchRequest,
    SourceKind,
)
from kittyai.http_server import ApiError, read_model
from kittyai.mqtt import MqttLink
from kittyai.rag.embedders import EmbedderError, EmbedderUnavailableError, embedder_from_options
from kittyai.rag.knowledge import KnowledgeBase
from kittyai.rag.options import RagOptions
from kittyai.rag.parsing import DocumentError, DocumentErrorCode
from kittyai.rag.projects import ProjectMemory, ProjectStore, ProjectSummarizer
from kittyai.rag.sources import (
    Network,
    SourceDocument,
    fetch_url,
    parse_networks,
    read_share_file,
    read_upload,
)
from kittyai.rag.watch import KnowledgeWatcher
from kittyai.service import ServiceRuntime
from kittyai.validation import describe_errors

_LOGGER = logging.getLogger(__name__)

KNOWLEDGE_FILE = "knowledge.sqlite3"
PROJECTS_FILE = "projects.sqlite3"
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
# However many changes a burst brings, the stats go out at most this often.
STATS_MIN_INTERVAL_S = 1.0
# Projects stop being active as days pass, with no change to announce it.
STATS_REFRESH_INTERVAL_S = 3600.0
_MULTIPART = "multipart/form-data"
_NAME = re.compile(NAME_PATTERN)
_DOCUMENT_ERROR_STATUS = {
    DocumentErrorCode.UNSUPPORTED_TYPE: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    DocumentErrorCode.TOO_LARGE: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
}


async def serve(runtime: ServiceRuntime[RagOptions]) -> None:
    """Open the knowledge base and project memory, start the watcher and add the routes."""
    options = runtime.options
    # Checked before anything is opened: a typo in the options stops the start.
    networks = parse_networks(options.url_networks)
    embedder = await embedder_from_options(options.embedder, runtime.session)
    _LOGGER.info("Embedding with %s (%d dimensions)", embedder.id, embedder.dim)
    knowledge = await KnowledgeBase.open(
        runtime.data_dir / KNOWLEDGE_FILE, embedder, options.chunking
    )
    runtime.on_stop(knowledge.close)
    store = await ProjectStore.open(runtime.data_dir / PROJECTS_FILE)
    runtime.on_stop(store.close)
    stats_due = asyncio.Event()
    memory = ProjectMemory(
        store=store,
        knowledge=knowledge,
        summarizer=ProjectSummarizer(ChatModel(runtime.session, options.model)),
        on_change=stats_due.set,
    )
    await memory.index_missing_notes()
    api = KnowledgeApi(
        options=options,
        knowledge=knowledge,
        memory=memory,
        networks=networks,
        on_change=stats_due.set,
    )
    api.add_routes(runtime.app)
    runtime.create_background_task(
        _publish_stats_forever(runtime.mqtt, api.collect_stats, stats_due), "stats"
    )
    runtime.create_background_task(memory.refresh_forever(), "summaries")
    # After a change of embedder: in the background, so the API (and /health, which
    # the watchdog checks) answers while a large base is re-embedded.
    runtime.create_background_task(_embed_stale_chunks(knowledge, stats_due.set), "re-embed")
    if options.watch:
        watcher = KnowledgeWatcher(
            knowledge=knowledge,
            share_dir=Path(options.share_dir),
            interval_s=options.watch_interval_s,
            max_bytes=max_document_bytes(options),
            on_change=stats_due.set,
        )
        if await watcher.prepare():
            _LOGGER.info("Watching %s every %g s", watcher.folder, options.watch_interval_s)
            # The first scan runs in the background: a folder of manuals takes a while,
            # and the API answers meanwhile.
            runtime.create_background_task(watcher.run_forever(), "watch")


def max_document_bytes(options: RagOptions) -> int:
    """Return how many bytes a document may have."""
    return int(options.max_document_mb * 1_048_576)


async def _embed_stale_chunks(knowledge: KnowledgeBase, on_change: Callable[[], None]) -> None:
    """Re-embed what the embedder has not embedded yet, retrying while it is unreachable."""
    backoff = Backoff(initial=5.0, maximum=300.0)
    while True:
        try:
            await knowledge.embed_stale_chunks()
        except EmbedderError as err:
            delay = backoff.next_delay()
            _LOGGER.warning("Re-embedding paused for %.0f s: %s", delay, err)
            on_change()
            await asyncio.sleep(delay)
        else:
            on_change()
            return


async def _publish_stats_forever(
    mqtt: MqttLink, collect: Callable[[], Awaitable[KnowledgeStats]], due: asyncio.Event
) -> None:
    while True:
        due.clear()
        mqtt.set_retained(RAG_STATS.pattern, await collect(), qos=RAG_STATS.qos)
        await asyncio.sleep(STATS_MIN_INTERVAL_S)
        with suppress(TimeoutError):
            async with asyncio.timeout(STATS_REFRESH_INTERVAL_S):
                await due.wait()


@contextmanager
def _knowledge_errors() -> Iterator[None]:
    """Answer the knowledge base's document and embedder errors as JSON errors."""
    try:
        yield
    except DocumentError as err:
        status = _DOCUMENT_ERROR_STATUS.get(err.code, HTTPStatus.UNPROCESSABLE_CONTENT)
        raise ApiError(status, err.code, err.message) from None
    except EmbedderUnavailableError as err:
        raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "embedder_unavailable", str(err)) from None
    except EmbedderError as err:
        raise ApiError(HTTPStatus.BAD_GATEWAY, "embedder_error", str(err)) from None


def _query[ModelT: BaseModel](request: web.Request, model: type[ModelT]) -> ModelT:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as err:
        raise ApiError(
            HTTPStatus.UNPROCESSABLE_CONTENT, "invalid_request", describe_errors(err)
        ) from None


def _json(model: BaseModel, status: HTTPStatus = HTTPStatus.OK, **headers: str) -> web.Response:
    return web.json_response(text=model.model_dump_json(), status=status, headers=headers)


class DocumentQuery(BaseModel):
    """The query of `GET /api/documents`."""

    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(default=None, pattern=NAME_PATTERN)
    project: str | None = Field(default=None, pattern=NAME_PATTERN)
    kind: SourceKind | None = None
    limit: int = Field(default=DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT)


class ProjectQuery(BaseModel):
    """The query of `GET /api/projects`."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT)


class SummaryQuery(BaseModel):
    """The query of `GET /api/projects/{id}/summary`."""

    model_config = ConfigDict(extra="forbid")

    # Ask the model even when the summary is up to date.
    refresh: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class KnowledgeApi:
    """The handlers, bound to one running knowledge service."""

    options: RagOptions
    knowledge: KnowledgeBase
    memory: ProjectMemory
    networks: list[Network]
    on_change: Callable[[], None]

    def add_routes(self, app: web.Application) -> None:
        """Add the knowledge routes to `app`."""
        app.router.add_post("/api/ingest", self.ingest)
        app.router.add_get("/api/documents", self.documents)
        app.router.add_get("/api/documents/{document_id}", self.document)
        app.router.add_delete("/api/documents/{document_id}", self.delete_document)
        app.router.add_post("/api/search", self.search)
        app.router.add_get("/v1/context/search", self.context_search)
        app.router.add_get("/api/projects", self.projects)
        app.router.add_get("/api/projects/{project}", self.project)
        app.router.add_post("/api/projects/{project}/notes", self.add_note)
        app.router.add_post("/api/projects/{project}/artifacts", self.link_artifact)
        app.router.add_get("/api/projects/{project}/summary", self.summary)
        app.router.add_get("/api/stats", self.stats)

    async def collect_stats(self) -> KnowledgeStats:
        """Return the statistics as of now."""
        counts = await self.knowledge.counts()
        return KnowledgeStats(
            documents=counts.documents,
            chunks=counts.chunks,
            embedder=self.knowledge.embedder_id,
            chunks_to_embed=self.knowledge.chunks_to_embed,
            last_ingest_at=counts.last_ingest_at,
            last_ingest_title=counts.last_ingest_title,
            active_projects=await self.memory.active_projects(),
        )

    async def ingest(self, request: web.Request) -> web.Response:
        """Ingest an upload, a file of the share or a LAN URL; 201 when new, else 200."""
        max_bytes = max_document_bytes(self.options)
        if request.content_type == _MULTIPART:
            document, form = await read_upload(request, max_bytes)
            collection, project, title = form.collection, form.project, form.title
        else:
            body = await read_model(request, IngestRequest)
            document = await self._fetch(body, max_bytes)
            collection, project, title = body.collection, body.project, body.title
        with _knowledge_errors():
            result = await self.knowledge.ingest(
                document.content,
                source=document.source,
                source_kind=document.source_kind,
                name=document.name,
                media_type=document.media_type,
                collection=collection,
                project=project,
                title=title,
            )
        if result.outcome is IngestOutcome.UNCHANGED:
            return _json(result)
        self.on_change()
        if result.outcome is IngestOutcome.REPLACED:
            return _json(result)
        return _json(
            result,
            HTTPStatus.CREATED,
            **{hdrs.LOCATION: f"/api/documents/{result.document.id}"},
        )

    async def documents(self, request: web.Request) -> web.Response:
        """Answer the documents, newest first, filtered by collection, project or kind."""
        query = _query(request, DocumentQuery)
        documents = await self.knowledge.documents(
            collection=query.collection,
            project=query.project,
            source_kind=query.kind,
            limit=query.limit,
        )
        return _json(DocumentList(documents=documents))

    async def document(self, request: web.Request) -> web.Response:
        """Answer one document."""
        document = await self.knowledge.document(request.match_info["document_id"])
        return _json(_found(document))

    async def delete_document(self, request: web.Request) -> web.Response:
        """Delete a document with its chunks; answer what was deleted."""
        document = _found(await self.knowledge.delete(request.match_info["document_id"]))
        self.on_change()
        return _json(document)

    async def search(self, request: web.Request) -> web.Response:
        """Answer the chunks that best match the body's query."""
        body = await read_model(request, SearchRequest)
        with _knowledge_errors():
            return _json(await self.knowledge.search(body))

    async def context_search(self, request: web.Request) -> web.Response:
        """Answer `POST /api/search`'s answer for a query string, for other tools."""
        params = dict(request.query)
        if "q" not in params:
            raise ApiError(
                HTTPStatus.UNPROCESSABLE_CONTENT, "invalid_request", "q: the query is missing"
            )
        params["query"] = params.pop("q")
        try:
            body = SearchRequest.model_validate(params)
        except ValidationError as err:
            raise ApiError(
                HTTPStatus.UNPROCESSABLE_CONTENT, "invalid_request", describe_errors(err)
            ) from None
        with _knowledge_errors():
            return _json(await self.knowledge.search(body))

    async def projects(self, request: web.Request) -> web.Response:
        """Answer the projects, newest activity first."""
        query = _query(request, ProjectQuery)
        return _json(ProjectList(projects=await self.memory.projects(limit=query.limit)))

    async def project(self, request: web.Request) -> web.Response:
        """Answer a project with its notes and links."""
        detail = await self.memory.detail(_project_id(request))
        if detail is None:
            raise _no_project(request)
        return _json(detail)

    async def add_note(self, request: web.Request) -> web.Response:
        """Add a note to a project (made by its first note); 201 with the note."""
        project = _project_id(request)
        body = await read_model(request, NoteRequest)
        with _knowledge_errors():
            note = await self.memory.add_note(project, body)
        return _json(note, HTTPStatus.CREATED)

    async def link_artifact(self, request: web.Request) -> web.Response:
        """Link a CAD artifact, print or run to a project; 201 when new, else 200."""
        project = _project_id(request)
        body = await read_model(request, ArtifactLinkRequest)
        link, created = await self.memory.link_artifact(project, body)
        return _json(link, HTTPStatus.CREATED if created else HTTPStatus.OK)

    async def summary(self, request: web.Request) -> web.Response:
        """Answer a project's summary, written again first when stale or asked to."""
        project = _project_id(request)
        query = _query(request, SummaryQuery)
        summary = await self.memory.summary(project, refresh=query.refresh)
        if summary is None:
            raise _no_project(request)
        return _json(summary)

    async def stats(self, _request: web.Request) -> web.Response:
        """Answer the statistics `kitty/rag/stats` carries."""
        return _json(await self.collect_stats())

    async def _fetch(self, body: IngestRequest, max_bytes: int) -> SourceDocument:
        if body.path is not None:
            return await read_share_file(Path(self.options.share_dir), body.path, max_bytes)
        assert body.url is not None  # noqa: S101 - IngestRequest wants one of the two
        return await fetch_url(body.url, self.networks, max_bytes)


def _found(document: DocumentInfo | None) -> DocumentInfo:
    if document is None:
        raise ApiError(HTTPStatus.NOT_FOUND, "document_not_found", "There is no such document")
    return document


def _project_id(request: web.Request) -> str:
    project = request.match_info["project"]
    if not _NAME.fullmatch(project):
        raise ApiError(
            HTTPStatus.UNPROCESSABLE_CONTENT,
            "invalid_project",
            "A project name is 1 to 64 lower-case letters, digits, '-' and '_',"
            " starting with a letter or a digit",
        )
    return project


def _no_project(request: web.Request) -> ApiError:
    return ApiError(
        HTTPStatus.NOT_FOUND,
        "project_not_found",
        f"There is no project {request.match_info['project']}",
    )
