"""RagClient against the real knowledge service process, and against servers that misbehave.

One knowledge service (real MiniLM embeddings, its own SQLite files) serves the module
over a share folder of reportlab manuals and Markdown notes; it has no model, so
project summaries say why they are not written. Each test ingests what it asserts on.
"""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
from aiohttp import web
import pytest

from kittyai.catalog import ServiceName
from kittyai.client import KittyAuthError, KittyConnectionError, KittyResponseError
from kittyai.contract.rag import (
    ArtifactKind,
    ArtifactLinkRequest,
    IngestOutcome,
    IngestRequest,
    NoteKind,
    NoteRequest,
    SearchMode,
    SearchRequest,
    SourceKind,
)
from kittyai.rag_client import RagClient, RagRequestError
from tests.helpers.knowledge_corpus import (
    write_corrupt_pdf,
    write_encrypted_pdf,
    write_manual_pdf,
)
from tests.helpers.loopback_server import RouteServer
from tests.helpers.net import free_port, loopback_sockets
from tests.helpers.services import ServiceProcess

TOKEN = "rag-client-token-0123456789"
KNOWLEDGE = "kitty/knowledge"
MK4 = f"{KNOWLEDGE}/mk4.pdf"
MK4_PAGES = [
    ["# Prusa MK4 handbook", "Unpack the printer and keep the box for transport."],
    ["## 2 Nozzle", "The hotend reaches a maximum nozzle temperature of 290 °C."],
    ["## 3 Heatbed", "The heatbed reaches a maximum bed temperature of 120 °C."],
]
NOTES = f"{KNOWLEDGE}/notes.md"
NOTES_TEXT = (
    "# Workshop notes\n\n## Hotends\n\nThe spare hotend in drawer 4 is an E3D-V6 with a "
    "0.4 mm brass nozzle.\n"
)


@pytest.fixture(scope="module")
def share(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The share folder, with a manual, notes and two PDFs that cannot be read."""
    folder = tmp_path_factory.mktemp("share")
    (folder / KNOWLEDGE).mkdir(parents=True)
    write_manual_pdf(folder / MK4, MK4_PAGES, "Prusa MK4 handbook")
    (folder / NOTES).write_text(NOTES_TEXT, encoding="utf-8")
    write_encrypted_pdf(folder / KNOWLEDGE / "locked.pdf")
    write_corrupt_pdf(folder / KNOWLEDGE / "broken.pdf")
    (folder / KNOWLEDGE / "parts.xlsx").write_bytes(b"PK\x03\x04 not a document KITTY reads")
    return folder


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory, share: Path) -> Iterator[ServiceProcess]:
    """The real knowledge service, without MQTT or a model."""
    with loopback_sockets():
        process = ServiceProcess(
            ServiceName.RAG,
            tmp_path_factory.mktemp("rag"),
            mqtt_port=None,
            token=TOKEN,
            extra_options={"share_dir": str(share), "watch": False},
        )
        process.start(timeout=60)
    yield process
    process.stop()


@pytest.fixture
def client(rag: ServiceProcess, session: aiohttp.ClientSession) -> RagClient:
    return RagClient(session, rag.url, TOKEN)


async def test_ingest_is_idempotent_and_listed(client: RagClient) -> None:
    """A manual is ingested once with its pages; the same file again changes nothing."""
    first = await client.ingest(IngestRequest(path=MK4, collection="manuals"))
    again = await client.ingest(IngestRequest(path=MK4, collection="manuals"))

    assert first.outcome in (IngestOutcome.INGESTED, IngestOutcome.UNCHANGED)
    assert again.outcome is IngestOutcome.UNCHANGED
    assert again.document == first.document
    document = first.document
    assert document.source == f"share:{MK4}"
    assert document.source_kind is SourceKind.SHARE
    assert document.media_type == "application/pdf"
    assert document.pages == len(MK4_PAGES)
    assert document.chunks >= 1
    manuals = await client.documents(collection="manuals")
    assert [listed.id for listed in manuals] == [document.id]
    assert await client.documents(collection="datasheets") == []
    assert document in await client.documents(source_kind=SourceKind.SHARE, limit=10)


async def test_search_cites_page_and_section(client: RagClient) -> None:
    """A question finds the manual's page; both search routes answer the same."""
    await client.ingest(IngestRequest(path=MK4, collection="manuals"))
    request = SearchRequest(query="What is the maximum bed temperature?", limit=3)

    found = await client.search(request)
    context = await client.context_search(request)

    assert found.query == request.query
    assert found.mode is SearchMode.HYBRID
    assert found.embedder
    top = found.hits[0]
    assert top.page == 3
    assert "120 °C" in top.text
    assert top.title == "Prusa MK4 handbook"
    assert top.source == f"share:{MK4}"
    assert [hit.chunk_id for hit in context.hits] == [hit.chunk_id for hit in found.hits]
    keyword = await client.context_search(
        SearchRequest(query="nozzle", mode=SearchMode.KEYWORD, collection="manuals", limit=1)
    )
    assert [hit.page for hit in keyword.hits] == [2]
    assert keyword.hits[0].vector_rank is None


async def test_delete_removes_the_document(client: RagClient) -> None:
    """A deleted document is gone from the list and from search; deleting it again is a 404."""
    document = (await client.ingest(IngestRequest(path=NOTES, collection="notes"))).document

    deleted = await client.delete(document.id)

    assert deleted.id == document.id
    assert await client.documents(collection="notes") == []
    found = await client.search(SearchRequest(query="E3D-V6", collection="notes"))
    assert found.hits == []
    with pytest.raises(RagRequestError) as refused:
        await client.delete(document.id)
    assert (refused.value.status, refused.value.code) == (404, "document_not_found")


async def test_project_notes_links_and_summary(client: RagClient) -> None:
    """A first note makes the project; links and notes show in it; no model, no summary yet."""
    note = await client.add_note(
        "drone", NoteRequest(text="Motor mounts need 3 mm inserts.", author="Ada")
    )
    link = await client.link_artifact(
        "drone", ArtifactLinkRequest(kind=ArtifactKind.CAD, ref="a1b2c3", title="Motor mount")
    )
    again = await client.link_artifact(
        "drone", ArtifactLinkRequest(kind=ArtifactKind.CAD, ref="a1b2c3")
    )

    assert (note.project, note.author, note.kind) == ("drone", "Ada", NoteKind.NOTE)
    assert (link.kind, link.ref, link.title) == (ArtifactKind.CAD, "a1b2c3", "Motor mount")
    assert again.linked_at == link.linked_at
    detail = await client.project("drone")
    assert detail.project.id == "drone"
    assert note in detail.notes
    assert detail.artifacts == [link]
    assert "drone" in [project.id for project in await client.projects()]
    # Notes are searchable like documents.
    found = await client.search(SearchRequest(query="motor mount inserts", project="drone"))
    assert any("3 mm inserts" in hit.text for hit in found.hits)

    summary = await client.summary("drone", refresh=True)
    assert summary.project == "drone"
    assert summary.stale
    assert summary.error is not None
    assert summary.generated_at is None


async def test_stats_count_documents_and_projects(client: RagClient) -> None:
    """The statistics count what was ingested and name the project just noted."""
    await client.ingest(IngestRequest(path=MK4, collection="manuals"))
    await client.add_note("bench-psu", NoteRequest(text="Order a 24 V fan.", author="Ada"))

    stats = await client.stats()

    assert stats.documents >= 1
    assert stats.chunks >= stats.documents
    assert stats.last_ingest_at is not None
    assert stats.active_projects[0].id == "bench-psu"


@pytest.mark.parametrize(
    ("request_body", "status", "code", "named"),
    [
        ({"path": f"{KNOWLEDGE}/missing.pdf"}, 404, "file_not_found", "missing.pdf"),
        ({"path": "../etc/passwd"}, 422, "parent_path", "../etc/passwd"),
        ({"path": f"{KNOWLEDGE}/locked.pdf"}, 422, "encrypted_document", "locked.pdf"),
        ({"path": f"{KNOWLEDGE}/broken.pdf"}, 422, "corrupt_document", "broken.pdf"),
        ({"path": f"{KNOWLEDGE}/parts.xlsx"}, 415, "unsupported_type", "parts.xlsx"),
        ({"url": "http://93.184.215.14/manual.pdf"}, 403, "url_not_local", "93.184.215.14"),
    ],
)
async def test_refused_ingests(
    client: RagClient, request_body: dict[str, str], status: int, code: str, named: str
) -> None:
    """The service's refusals come with their code, status and a message naming the problem."""
    with pytest.raises(RagRequestError) as refused:
        await client.ingest(IngestRequest.model_validate(request_body))
    assert (refused.value.status, refused.value.code) == (status, code)
    assert named in refused.value.message


async def test_unknown_project(client: RagClient) -> None:
    """Reading a project nobody noted anything in is a 404 with its own code."""
    for call in (client.project("no-such-project"), client.summary("no-such-project")):
        with pytest.raises(RagRequestError) as refused:
            await call
        assert (refused.value.status, refused.value.code) == (404, "project_not_found")


async def test_wrong_token_and_no_service(
    rag: ServiceProcess, session: aiohttp.ClientSession
) -> None:
    """A wrong token is an auth error; nothing listening is a connection error."""
    with pytest.raises(KittyAuthError) as rejected:
        await RagClient(session, rag.url, "wrong-token").stats()
    assert "wrong-token" not in str(rejected.value)
    closed = RagClient(session, f"http://127.0.0.1:{free_port()}", TOKEN)
    with pytest.raises(KittyConnectionError):
        await closed.projects()


@pytest.fixture
async def not_rag_url() -> AsyncIterator[str]:
    """Serve the knowledge routes on 127.0.0.1 with bodies that are not the service's."""

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"documents": "many"})

    async def refused(_: web.Request) -> web.Response:
        return web.Response(status=422, text="<html>no</html>", content_type="text/html")

    async with RouteServer({"/api/stats": stats, "/api/projects": refused}) as server:
        yield server.url


async def test_answers_that_break_the_api(not_rag_url: str, session: aiohttp.ClientSession) -> None:
    """A body that is not the API's, or a refusal without its error body, is a response error."""
    client = RagClient(session, not_rag_url, TOKEN)
    with pytest.raises(KittyResponseError, match="a statistics payload that is not valid"):
        await client.stats()
    with pytest.raises(KittyResponseError, match="answered HTTP 422"):
        await client.projects()
