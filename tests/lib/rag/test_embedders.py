"""The knowledge service's embedders against servers speaking the router's and Ollama's API."""

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
import numpy as np
import pytest

from kittyai.contract.rag import KnowledgeStats
from kittyai.embedding import MINILM_ID, MiniLMEmbedder
from kittyai.rag.embedders import (
    REMOTE_BATCH,
    EmbedderError,
    EmbedderUnavailableError,
    embedder_from_options,
)
from kittyai.rag.options import EmbedderKind, EmbedderOptions
from tests.helpers.fake_llm import EMBEDDING_DIMENSIONS, FakeOllama, FakeOpenAI, embedding
from tests.helpers.loopback_server import RecordingServer
from tests.helpers.net import free_port
from tests.lib.rag.conftest import STARTUP_TIMEOUT_S, RagApi, rag_service

API_KEY = "sk-embed-0123456789abcdef"
MANUAL = "# MK4 handbook\n\n## Heatbed\n\nThe heatbed reaches a maximum temperature of 120 °C.\n"
TEXTS = ["The MK4 heatbed reaches 120 °C.", "Motor mounts need 3 mm inserts.", "E3D-V6"]


def expected(texts: list[str], dimensions: int = EMBEDDING_DIMENSIONS) -> np.ndarray:
    return np.array([embedding(text, dimensions) for text in texts], dtype=np.float32)


class ShiftingEmbeddings(RecordingServer):
    """An OpenAI-compatible `/v1/embeddings` whose model can be swapped for a longer one."""

    def __init__(self) -> None:
        super().__init__()
        self.dimensions = 8

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self._embeddings)
        return app

    async def _embeddings(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await self._record(request)
        data = [
            {"object": "embedding", "index": index, "embedding": embedding(text, self.dimensions)}
            for index, text in enumerate(body["input"])
        ]
        # Out of order on the wire, as OpenAI allows: `index` says which text is which.
        return web.json_response({"object": "list", "data": data[::-1], "model": body["model"]})


async def test_the_router_embedder_learns_the_dimension_and_keeps_the_order_of_texts(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeOpenAI(api_key=API_KEY) as fake:
        options = EmbedderOptions(
            kind=EmbedderKind.ROUTER, url=fake.url, model="text-embedding-3-small", api_key=API_KEY
        )
        embedder = await embedder_from_options(options, session)
        texts = [f"chunk number {index} of the manual" for index in range(REMOTE_BATCH + 6)]

        vectors = await embedder.embed(texts)

    assert (embedder.id, embedder.dim) == ("router/text-embedding-3-small", EMBEDDING_DIMENSIONS)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected(texts), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    # The probe, then the texts in two bodies of at most REMOTE_BATCH.
    assert [len(request.body["input"]) for request in fake.requests] == [1, REMOTE_BATCH, 6]
    assert {request.headers["Authorization"] for request in fake.requests} == {f"Bearer {API_KEY}"}


async def test_the_ollama_embedder_asks_api_embed(session: aiohttp.ClientSession) -> None:
    async with FakeOllama() as fake:
        options = EmbedderOptions(kind=EmbedderKind.OLLAMA, url=fake.url, model="nomic-embed-text")
        embedder = await embedder_from_options(options, session)
        vectors = await embedder.embed(TEXTS)

    assert (embedder.id, embedder.dim) == ("ollama/nomic-embed-text", EMBEDDING_DIMENSIONS)
    np.testing.assert_allclose(vectors, expected(TEXTS), atol=1e-6)
    assert fake.paths() == ["/api/embed", "/api/embed"]
    assert fake.requests[1].body == {"model": "nomic-embed-text", "input": TEXTS}
    assert "Authorization" not in fake.requests[1].headers


async def test_minilm_is_the_offline_default(session: aiohttp.ClientSession) -> None:
    embedder = await embedder_from_options(EmbedderOptions(), session)

    assert isinstance(embedder, MiniLMEmbedder)
    assert (embedder.id, embedder.dim) == (MINILM_ID, 384)


async def test_a_refused_key_is_reported_without_the_key(session: aiohttp.ClientSession) -> None:
    async with FakeOpenAI(api_key=API_KEY) as fake:
        options = EmbedderOptions(
            kind=EmbedderKind.ROUTER, url=fake.url, model="m", api_key="sk-wrong-key-42424242"
        )
        with pytest.raises(EmbedderError) as raised:
            await embedder_from_options(options, session)

    assert str(raised.value) == "router/m answered HTTP 401; check the embedder's api_key"
    assert not isinstance(raised.value, EmbedderUnavailableError)


async def test_a_server_that_is_not_there_is_unavailable(session: aiohttp.ClientSession) -> None:
    options = EmbedderOptions(
        kind=EmbedderKind.OLLAMA, url=f"http://127.0.0.1:{free_port()}", model="m", timeout=5
    )

    with pytest.raises(EmbedderUnavailableError, match="ollama/m could not be reached"):
        await embedder_from_options(options, session)


async def test_a_model_that_changes_its_dimension_is_refused(
    session: aiohttp.ClientSession,
) -> None:
    async with ShiftingEmbeddings() as server:
        options = EmbedderOptions(kind=EmbedderKind.ROUTER, url=server.url, model="swapped")
        embedder = await embedder_from_options(options, session)
        np.testing.assert_allclose(await embedder.embed(TEXTS), expected(TEXTS, 8), atol=1e-6)

        server.dimensions = 16
        with pytest.raises(EmbedderError, match="16-dimensional vectors instead of 8"):
            await embedder.embed(TEXTS)

    assert embedder.dim == 8


async def wait_until_embedded(client: RagApi) -> KnowledgeStats:
    """Return the service's stats once no chunk waits for a vector any more."""
    for _ in range(300):
        stats = await client.stats()
        if not stats.chunks_to_embed:
            return stats
        await asyncio.sleep(0.1)
    raise AssertionError(f"{stats.chunks_to_embed} chunks still wait for a vector after 30 s")


async def test_switching_the_service_to_the_router_re_embeds_every_chunk(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    offline = rag_service(tmp_path)
    await asyncio.to_thread(offline.start, STARTUP_TIMEOUT_S)
    try:
        client = RagApi(offline, session)
        client.ingested(await client.upload("mk4.md", MANUAL.encode(), collection="manuals"))
        await client.note("drone", "Motor mounts need 3 mm heat-set inserts.")
        before = await client.stats()
    finally:
        offline.stop()

    async with FakeOpenAI(api_key=API_KEY) as fake:
        embedder = {"kind": "router", "url": fake.url, "model": "embed-small", "api_key": API_KEY}
        routed = rag_service(tmp_path, embedder=embedder)
        await asyncio.to_thread(routed.start, STARTUP_TIMEOUT_S)
        try:
            client = RagApi(routed, session)
            # The service answers while it re-embeds, and says how much is left.
            during = await client.stats()
            after = await wait_until_embedded(client)
            found = await client.search("heatbed maximum temperature", collection="manuals")
            documents = await client.get("/api/documents")
            embedded = [text for request in fake.requests for text in request.body["input"]]

            # The router goes away.
            await fake.__aexit__(None, None, None)
            outage = await client.call("POST", "/api/search", json_body={"query": "heatbed"})
            lost_note = await client.call(
                "POST",
                "/api/projects/drone/notes",
                json_body={"text": "Props are 5 inch.", "author": "ada"},
            )
            keyword = await client.search("heatbed", mode="keyword")
            project = await client.get("/api/projects/drone")
        finally:
            routed.stop()

    assert during.chunks_to_embed in range(before.chunks + 2)  # notes' chunks too
    assert after.chunks_to_embed == 0
    assert before.embedder == "all-minilm-l6-v2"
    assert after.embedder == found.embedder == "router/embed-small"
    assert (after.documents, after.chunks) == (before.documents, before.chunks)
    # Every chunk (the note's too) went to the router once, besides the probe and the query.
    assert len(embedded) == 1 + before.chunks + 1 + 1
    assert any("heat-set inserts" in text for text in embedded)
    assert "120 °C" in found.hits[0].text
    assert {item["embedder"] for item in documents["documents"]} == {"router/embed-small"}
    # With the router gone, what needs a vector says why; keyword search still answers.
    assert (outage.status, outage.code) == (503, "embedder_unavailable")
    assert (lost_note.status, lost_note.code) == (503, "embedder_unavailable")
    assert "120 °C" in keyword.hits[0].text
    assert project["project"]["notes"] == 1
