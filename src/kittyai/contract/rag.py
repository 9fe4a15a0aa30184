"""Bodies of the knowledge service's HTTP API and the payload of its MQTT statistics.

The same models are what `POST /api/ingest`, `POST /api/search` and the project
routes take and answer, and what `kitty/rag/stats` carries, so Home Assistant reads
one shape wherever it looks. They need neither numpy nor a model: the integration
imports them.
"""

from datetime import datetime
from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Collections and projects are named in paths, filters and sentences ("project drone").
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
DEFAULT_COLLECTION = "default"
MAX_QUERY_LENGTH = 2000
MAX_SEARCH_LIMIT = 50
DEFAULT_SEARCH_LIMIT = 5
MAX_NOTE_LENGTH = 8000


class SourceKind(StrEnum):
    """Where a document came from."""

    # Sent in the body of `POST /api/ingest`.
    UPLOAD = "upload"
    # A file under the share folder, named by its path there.
    SHARE = "share"
    # Fetched from a URL on the local network.
    URL = "url"
    # Dropped into the watch folder (`share/kitty/knowledge/`).
    WATCH = "watch"
    # A project's note: searchable like a document.
    NOTE = "note"


class IngestRequest(BaseModel):
    """The JSON body of `POST /api/ingest`: a file under the share folder or a LAN URL.

    A file upload is a multipart body instead, with a `file` part and these fields
    (except `path` and `url`) as form fields.
    """

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="A path relative to the share folder, e.g. kitty/knowledge/mk4.pdf.",
    )
    url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="An http(s) URL whose host is on the local network.",
    )
    collection: str = Field(default=DEFAULT_COLLECTION, pattern=NAME_PATTERN)
    project: str | None = Field(default=None, pattern=NAME_PATTERN)
    title: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path and url")
        return self


class IngestOutcome(StrEnum):
    """What an ingest did."""

    INGESTED = "ingested"
    # The same content was ingested before under this source: nothing changed.
    UNCHANGED = "unchanged"
    # The source had other content: its old chunks were replaced.
    REPLACED = "replaced"


class DocumentInfo(BaseModel):
    """One ingested document."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    # What identifies the document across re-ingests: `share:<path>`, the URL,
    # `upload:<file name>` or `note:<project>/<note id>`.
    source: str
    source_kind: SourceKind
    title: str
    collection: str
    project: str | None
    media_type: str
    content_hash: str = Field(description="SHA-256 of the document's bytes.")
    size_bytes: int = Field(ge=0)
    # PDFs have pages; other documents count as one.
    pages: int = Field(ge=0)
    chunks: int = Field(ge=0)
    embedder: str = Field(description="Id of the embedder that made the vectors.")
    ingested_at: datetime


class IngestResult(BaseModel):
    """The answer of `POST /api/ingest`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outcome: IngestOutcome
    document: DocumentInfo


class DocumentList(BaseModel):
    """The answer of `GET /api/documents`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    documents: list[DocumentInfo]


class SearchMode(StrEnum):
    """How chunks are ranked."""

    # Vector and keyword ranks fused by reciprocal-rank fusion.
    HYBRID = "hybrid"
    # Cosine similarity of embeddings only.
    VECTOR = "vector"
    # BM25 over the FTS5 index only.
    KEYWORD = "keyword"


class SearchRequest(BaseModel):
    """The body of `POST /api/search`, and the query of `GET /v1/context/search` (`q`)."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_LENGTH)
    limit: int = Field(default=DEFAULT_SEARCH_LIMIT, ge=1, le=MAX_SEARCH_LIMIT)
    collection: str | None = Field(default=None, pattern=NAME_PATTERN)
    source: str | None = Field(default=None, min_length=1, max_length=2048)
    project: str | None = Field(default=None, pattern=NAME_PATTERN)
    mode: SearchMode = SearchMode.HYBRID


class SearchHit(BaseModel):
    """One retrieved chunk, with what a citation needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_id: int
    document_id: str
    text: str
    # Hybrid: the fused RRF score; vector: cosine; keyword: BM25 (higher is better).
    score: float
    source: str
    source_kind: SourceKind
    title: str
    collection: str
    project: str | None
    # 1-based page of a PDF; None for documents without pages.
    page: int | None
    # Headings from the outermost to the chunk's own, e.g. ["Specifications", "Heatbed"].
    section: list[str]
    # 1-based ranks in each list before fusion; None where the chunk was not in that list.
    vector_rank: int | None
    keyword_rank: int | None


class SearchResponse(BaseModel):
    """The answer of `POST /api/search` and `GET /v1/context/search`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query: str
    mode: SearchMode
    embedder: str
    hits: list[SearchHit]


class NoteKind(StrEnum):
    """What a project note is."""

    NOTE = "note"
    # The summary of a conversation about the project.
    CONVERSATION = "conversation"


class NoteRequest(BaseModel):
    """The body of `POST /api/projects/{id}/notes`; the project is made on its first note."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_NOTE_LENGTH)
    author: str = Field(min_length=1, max_length=100)
    kind: NoteKind = NoteKind.NOTE


class Note(BaseModel):
    """A note of a project."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int
    project: str
    text: str
    author: str
    kind: NoteKind
    created_at: datetime


class ArtifactKind(StrEnum):
    """What a project links to."""

    CAD = "cad"
    PRINT = "print"
    RUN = "run"


class ArtifactLinkRequest(BaseModel):
    """The body of `POST /api/projects/{id}/artifacts`."""

    model_config = ConfigDict(extra="forbid")

    kind: ArtifactKind
    ref: str = Field(
        min_length=1, max_length=256, description="The artifact's, print's or run's id."
    )
    title: str | None = Field(default=None, max_length=200)


class ArtifactLink(BaseModel):
    """A CAD artifact, print or run linked to a project."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ArtifactKind
    ref: str
    title: str | None
    linked_at: datetime


class ProjectSummary(BaseModel):
    """The answer of `GET /api/projects/{id}/summary`: written by the model from the notes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str
    done: list[str]
    open: list[str]
    next: list[str]
    # A few sentences for a person.
    text: str
    # The notes the summary was written from; fewer than the project has when stale.
    notes_included: int = Field(ge=0)
    generated_at: datetime | None
    # The model that wrote it; None before the first summary.
    model: str | None
    # Notes changed since, and the model could not be asked (see `error`).
    stale: bool
    error: str | None = None


class Project(BaseModel):
    """A project, as listed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=NAME_PATTERN)
    notes: int = Field(ge=0)
    artifacts: int = Field(ge=0)
    # Open items of its latest summary.
    open_items: int = Field(ge=0)
    created_at: datetime
    updated_at: datetime


class ProjectList(BaseModel):
    """The answer of `GET /api/projects`, newest activity first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    projects: list[Project]


class ProjectDetail(BaseModel):
    """The answer of `GET /api/projects/{id}`: the project, its notes and its links."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: Project
    notes: list[Note]
    artifacts: list[ArtifactLink]


class KnowledgeStats(BaseModel):
    """Payload of `kitty/rag/stats`, and the body of `GET /api/stats`."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="KnowledgeStats")

    v: Literal[1] = Field(default=1, description="Contract version of this payload.")
    # Project notes are not counted here: they are counted by project.
    documents: int = Field(ge=0)
    chunks: int = Field(ge=0)
    embedder: str
    chunks_to_embed: int = Field(
        default=0,
        ge=0,
        description="Chunks still waiting for a vector of the embedder, after it changed.",
    )
    last_ingest_at: datetime | None
    last_ingest_title: str | None
    # Projects with notes changed in the last 30 days, newest first.
    active_projects: list[Project]
