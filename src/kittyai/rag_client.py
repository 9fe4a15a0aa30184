"""Async client for the knowledge service's HTTP API: ingest, search, projects and notes.

Home Assistant uses it with its shared aiohttp session. It needs neither numpy nor a
model: it speaks the API's bodies (`kittyai.contract.rag`) and nothing else. No
message of its errors contains the token.
"""

from http import HTTPStatus

from yarl import URL

from kittyai.client import KittyClient, KittyRequestError, path_segment
from kittyai.contract.rag import (
    ArtifactLink,
    ArtifactLinkRequest,
    DocumentInfo,
    DocumentList,
    IngestRequest,
    IngestResult,
    KnowledgeStats,
    Note,
    NoteRequest,
    Project,
    ProjectDetail,
    ProjectList,
    ProjectSummary,
    SearchRequest,
    SearchResponse,
    SourceKind,
)


class RagRequestError(KittyRequestError):
    """The knowledge service refused a request (HTTP 4xx), saying why."""


class RagClient(KittyClient):
    """Talks to one knowledge service over HTTP with a bearer token.

    It is a KittyClient, so `get_info` tells who the service is; what it adds are
    the knowledge routes, and a `RagRequestError` for every request the service refuses.
    """

    refusal_error = RagRequestError
    # 201 where a request made something (a document, a note, a link), 200 where it
    # was there before. A 403 refuses a path outside the share or a URL outside the
    # home network.
    also_success = frozenset({HTTPStatus.OK, HTTPStatus.CREATED})
    forbidden_is_refusal = True

    async def ingest(self, request: IngestRequest) -> IngestResult:
        """Ingest a file of the share folder or a URL on the local network."""
        body = await self._request_json(
            "POST", "/api/ingest", json_body=request.model_dump(mode="json", exclude_none=True)
        )
        return self._parse(IngestResult, body, "an ingest result")

    async def documents(
        self,
        *,
        collection: str | None = None,
        project: str | None = None,
        source_kind: SourceKind | None = None,
        limit: int | None = None,
    ) -> list[DocumentInfo]:
        """Return the ingested documents, of one collection, project or kind if given."""
        query: dict[str, str | int] = {}
        if collection is not None:
            query["collection"] = collection
        if project is not None:
            query["project"] = project
        if source_kind is not None:
            query["kind"] = source_kind.value
        if limit is not None:
            query["limit"] = limit
        path = str(URL("/api/documents").with_query(query))
        body = await self._request_json("GET", path)
        return self._parse(DocumentList, body, "a document list").documents

    async def delete(self, document_id: str) -> DocumentInfo:
        """Delete a document with its chunks; return it as it was."""
        body = await self._request_json("DELETE", f"/api/documents/{path_segment(document_id)}")
        return self._parse(DocumentInfo, body, "a document")

    async def search(self, request: SearchRequest) -> SearchResponse:
        """Return the chunks that answer a query best, with what citing them needs."""
        body = await self._request_json(
            "POST", "/api/search", json_body=request.model_dump(mode="json", exclude_none=True)
        )
        return self._parse(SearchResponse, body, "a search response")

    async def context_search(self, request: SearchRequest) -> SearchResponse:
        """Search as other tools do, through `GET /v1/context/search`: the same answer."""
        fields = request.model_dump(mode="json", exclude_none=True)
        query = {"q": fields.pop("query"), **fields}
        path = str(URL("/v1/context/search").with_query(query))
        return self._parse(SearchResponse, await self._request_json("GET", path), "a search")

    async def projects(self) -> list[Project]:
        """Return the projects, the most recently active first."""
        body = await self._request_json("GET", "/api/projects")
        return self._parse(ProjectList, body, "a project list").projects

    async def project(self, project_id: str) -> ProjectDetail:
        """Return a project with its notes and linked artifacts."""
        body = await self._request_json("GET", f"/api/projects/{path_segment(project_id)}")
        return self._parse(ProjectDetail, body, "a project")

    async def add_note(self, project_id: str, note: NoteRequest) -> Note:
        """Add a note to a project, which is made on its first note; return the note."""
        body = await self._request_json(
            "POST",
            f"/api/projects/{path_segment(project_id)}/notes",
            json_body=note.model_dump(mode="json"),
        )
        return self._parse(Note, body, "a note")

    async def link_artifact(self, project_id: str, link: ArtifactLinkRequest) -> ArtifactLink:
        """Link a CAD artifact, a print or a run to a project; return the link."""
        body = await self._request_json(
            "POST",
            f"/api/projects/{path_segment(project_id)}/artifacts",
            json_body=link.model_dump(mode="json", exclude_none=True),
        )
        return self._parse(ArtifactLink, body, "an artifact link")

    async def summary(self, project_id: str, *, refresh: bool = False) -> ProjectSummary:
        """Return what is done, open and next in a project; `refresh` has it written anew."""
        path = f"/api/projects/{path_segment(project_id)}/summary"
        if refresh:
            path += "?refresh=true"
        body = await self._request_json("GET", path)
        return self._parse(ProjectSummary, body, "a project summary")

    async def stats(self) -> KnowledgeStats:
        """Return the counts, the last ingest and the active projects."""
        body = await self._request_json("GET", "/api/stats")
        return self._parse(KnowledgeStats, body, "a statistics payload")
