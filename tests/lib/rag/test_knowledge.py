"""The knowledge base with the real MiniLM on real SQLite: ingest, hybrid search, durability."""

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
import io
import logging
from pathlib import Path
import re
import shutil
import zlib

import numpy as np
import pytest
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

from kittyai.contract.rag import (
    IngestOutcome,
    SearchHit,
    SearchMode,
    SearchRequest,
    SourceKind,
)
from kittyai.embedding import MINILM_ID, MiniLMEmbedder
from kittyai.rag.knowledge import DocumentError, KnowledgeBase, embedding_text
from kittyai.rag.options import ChunkingOptions
from kittyai.rag.parsing import DocumentErrorCode
from tests.helpers.net import loopback_sockets

CHUNKING = ChunkingOptions()
MANUAL_SOURCE = "share:manuals/mk4.pdf"
NOTES_SOURCE = "upload:drone.md"
ENDER_SOURCE = "upload:ender3.txt"
STYLES = getSampleStyleSheet()

MANUAL_PAGES = [
    [
        "# 1 Introduction",
        "Thank you for choosing the Original Prusa MK4. This handbook explains how to set up, "
        "calibrate and maintain the printer. Read it completely before the first print.",
        "## 1.1 Getting help",
        "If something does not work, write to the support team at help@prusa.example with "
        "the serial number from the sticker on the back of the frame.",
    ],
    [
        "# 2 Safety instructions",
        "Never leave the printer unattended during a print. Keep it away from curtains, "
        "paper and other flammable materials, and keep a smoke detector above it.",
        "## 2.1 Electrical safety",
        "Connect the printer to a grounded socket only. Unplug it before you open the "
        "electronics cover or change the power supply.",
    ],
    [
        "# 3 Technical specifications",
        "## 3.1 Heatbed",
        "The heatbed reaches a maximum temperature of 120 °C. It is made of aluminium and "
        "holds the removable spring steel sheet with magnets.",
        "## 3.2 Hotend",
        "The printer ships with the E3D-V6 hotend and a 0.4 mm brass nozzle. The maximum "
        "nozzle temperature is 300 °C, enough for polycarbonate and nylon. Spare heater "
        "cartridges are sold as PN-2045-B.",
    ],
    [
        "# 4 Regular maintenance",
        "## 4.1 Lubrication",
        "Lubricate the linear rods of the X, Y and Z axes with a thin layer of grease every "
        "500 printing hours. Wipe old grease off with a paper towel first.",
        "## 4.2 Belts",
        "Check the tension of the X and Y belts every three months; a loose belt shows as "
        "layer shifts.",
    ],
    [
        "# 5 Troubleshooting",
        "Error 17505 HEATBED THERMAL RUNAWAY means that the bed temperature fell while the "
        "heater was on. Check the thermistor cable of the bed.",
        "Firmware V6 added a menu for the filament sensor; older firmware cannot turn it off. "
        "A replacement thermistor comes as PN-2046 or in the 2045 service kit.",
    ],
]
DRONE_NOTES = b"""\
# Drone project

## Frame

Motor mounts need 3 mm heat-set inserts; the frame arms are 5 mm carbon plates.

## Electronics

The flight controller runs Betaflight and the battery is a 4S 1500 mAh LiPo pack.
"""
ENDER_MANUAL = b"""\
Creality Ender-3 quick guide

The Ender-3 heated bed reaches 100 degrees Celsius at most.

Level the bed with a sheet of paper before every print.
"""

# (question, page of the answer)
FACT_QUESTIONS = [
    ("What is the maximum bed temperature of the MK4?", 3),
    ("How hot can the MK4 nozzle get?", 3),
    ("How often should I lubricate the rods?", 4),
    ("What does error 17505 mean?", 5),
    ("Who do I contact when something does not work?", 1),
    ("Where should I keep a smoke detector?", 2),
]
HOSTILE_QUERIES = [
    '"unterminated',
    "AND OR NEAR(",
    "NEAR(heatbed nozzle, 2)",
    "text: heatbed*",
    "heatbed^ -nozzle + ( ) { } [ ]",
    '"" "',
    "*",
    "NOT",
    "';DROP TABLE chunks;--",
]


def manual_pdf(pages: Sequence[Sequence[str]], title: str = "Original Prusa MK4 Handbook") -> bytes:
    """Return a PDF with one page per item of `pages`: '#' blocks are headings, the rest text."""
    story = []
    for number, blocks in enumerate(pages):
        if number:
            story.append(PageBreak())
        for block in blocks:
            level = len(block) - len(block.lstrip("#"))
            style = STYLES[f"Heading{level}"] if level else STYLES["BodyText"]
            story.append(Paragraph(block.lstrip("# "), style))
    buffer = io.BytesIO()
    SimpleDocTemplate(buffer, pagesize=A4, title=title, invariant=True).build(story)
    return buffer.getvalue()


MANUAL = manual_pdf(MANUAL_PAGES)


class HashingEmbedder:
    """Another embedder (another id and dimension): hashed words, counted and normalised."""

    id = "test-hashing-64"
    dim = 64

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                rows[row, zlib.crc32(word.encode()) % self.dim] += 1.0
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder.load()


async def ingest_corpus(knowledge: KnowledgeBase) -> None:
    await knowledge.ingest(
        MANUAL,
        source=MANUAL_SOURCE,
        source_kind=SourceKind.SHARE,
        name="mk4.pdf",
        collection="printers",
    )
    await knowledge.ingest(
        DRONE_NOTES,
        source=NOTES_SOURCE,
        source_kind=SourceKind.UPLOAD,
        name="drone.md",
        collection="projects",
        project="drone",
    )
    await knowledge.ingest(
        ENDER_MANUAL,
        source=ENDER_SOURCE,
        source_kind=SourceKind.UPLOAD,
        name="ender3.txt",
        collection="other-printers",
    )


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory, minilm: MiniLMEmbedder) -> Path:
    """A knowledge base file holding the manual, the drone notes and the Ender guide."""
    path = tmp_path_factory.mktemp("corpus") / "knowledge.sqlite3"

    async def build() -> None:
        knowledge = await KnowledgeBase.open(path, minilm, CHUNKING)
        try:
            await ingest_corpus(knowledge)
        finally:
            await knowledge.close()

    # Its own event loop, before the tests' loops (which would own its threads).
    with loopback_sockets():
        asyncio.run(build())
    return path


@pytest.fixture
def knowledge_file(tmp_path: Path, corpus_file: Path) -> Path:
    """A copy of the corpus file the test may change."""
    return Path(shutil.copy(corpus_file, tmp_path / "knowledge.sqlite3"))


@pytest.fixture
async def knowledge(knowledge_file: Path, minilm: MiniLMEmbedder) -> AsyncIterator[KnowledgeBase]:
    knowledge = await KnowledgeBase.open(knowledge_file, minilm, CHUNKING)
    yield knowledge
    await knowledge.close()


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="kittyai.rag.knowledge"):
        yield caplog


async def search(
    knowledge: KnowledgeBase,
    query: str,
    mode: SearchMode = SearchMode.HYBRID,
    *,
    limit: int = 5,
    **filters: str,
) -> list[SearchHit]:
    response = await knowledge.search(SearchRequest(query=query, mode=mode, limit=limit, **filters))
    assert response.mode is mode
    return response.hits


@pytest.mark.parametrize(("question", "page"), FACT_QUESTIONS, ids=[q for q, _ in FACT_QUESTIONS])
async def test_fact_questions_find_their_page_in_the_top_3(
    knowledge: KnowledgeBase, question: str, page: int
) -> None:
    hits = await search(knowledge, question)

    assert any(hit.source == MANUAL_SOURCE and hit.page == page for hit in hits[:3])


async def test_hits_carry_what_a_citation_needs(knowledge: KnowledgeBase) -> None:
    [hit, *_] = await search(knowledge, "What is the maximum heatbed temperature of the MK4?")

    assert "120 °C" in hit.text
    assert hit.source == MANUAL_SOURCE
    assert hit.source_kind is SourceKind.SHARE
    assert hit.title == "Original Prusa MK4 Handbook"
    assert hit.collection == "printers"
    assert hit.page == 3
    assert hit.section == ["3 Technical specifications", "3.1 Heatbed"]
    # Every word of the question is in the chunk (the MK4 in its title), so both lists
    # have it, fused by reciprocal rank: 1/(60 + r1) + 1/(60 + r2).
    assert hit.vector_rank is not None
    assert hit.keyword_rank is not None
    assert hit.score == pytest.approx(1 / (60 + hit.vector_rank) + 1 / (60 + hit.keyword_rank))


async def test_a_question_whose_words_are_not_all_in_one_chunk_is_ranked_by_its_vectors(
    knowledge: KnowledgeBase,
) -> None:
    # "bed" is in no chunk as a word of its own (the manual says "heatbed"): in the
    # hybrid ranking the words' list holds only chunks with every word of the query.
    hybrid = await search(knowledge, "What is the maximum bed temperature of the MK4?")
    vector = await search(
        knowledge, "What is the maximum bed temperature of the MK4?", SearchMode.VECTOR
    )

    assert [hit.chunk_id for hit in hybrid] == [hit.chunk_id for hit in vector]
    assert all(hit.keyword_rank is None for hit in hybrid)
    assert hybrid[0].page == 3


@pytest.mark.parametrize("part_number", ["E3D-V6", "e3d-v6", "17505"])
async def test_part_numbers_are_found_by_keyword(
    knowledge: KnowledgeBase, part_number: str
) -> None:
    hits = await search(knowledge, part_number, SearchMode.KEYWORD)

    assert part_number.lower() in hits[0].text.lower()
    assert hits[0].keyword_rank == 1
    assert hits[0].vector_rank is None
    assert hits[0].score > 0


@pytest.mark.parametrize("part_number", ["E3D-V6", "PN-2045-B", "PN-2045"])
async def test_a_part_number_matches_as_typed_not_by_its_pieces(
    knowledge: KnowledgeBase, part_number: str
) -> None:
    hits = await search(knowledge, part_number, SearchMode.KEYWORD)

    # Page 5's "Firmware V6", "PN-2046" and "2045 service kit" share pieces of the
    # names, not the names.
    assert [hit.page for hit in hits] == [3]


async def test_a_paraphrase_is_found_by_vector(knowledge: KnowledgeBase) -> None:
    hits = await search(
        knowledge, "how warm does the print surface of the MK4 go", SearchMode.VECTOR
    )

    assert any(hit.page == 3 and "120 °C" in hit.text for hit in hits[:3])
    assert all(hit.keyword_rank is None for hit in hits)
    # Cosines, best first.
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert 0 < scores[0] <= 1


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
@pytest.mark.parametrize("mode", list(SearchMode))
async def test_any_query_text_is_searched_as_words(
    knowledge: KnowledgeBase, query: str, mode: SearchMode
) -> None:
    hits = await search(knowledge, query, mode)

    assert len(hits) <= 5
    if mode is SearchMode.KEYWORD and "heatbed" in query:
        assert any("heatbed" in hit.text.lower() for hit in hits)


async def test_limit_bounds_the_hits(knowledge: KnowledgeBase) -> None:
    response = await knowledge.search(SearchRequest(query="printer", limit=2))

    assert len(response.hits) == 2
    assert response.embedder == MINILM_ID


@pytest.mark.parametrize("mode", list(SearchMode))
async def test_filters_keep_to_their_documents(knowledge: KnowledgeBase, mode: SearchMode) -> None:
    question = "How hot does the bed get?"

    by_collection = await search(knowledge, question, mode, collection="other-printers")
    by_source = await search(knowledge, question, mode, source=MANUAL_SOURCE)
    by_project = await search(knowledge, "what do the motor mounts need", mode, project="drone")
    nothing = await search(knowledge, question, mode, collection="no-such-collection")

    assert by_collection
    assert {hit.source for hit in by_collection} == {ENDER_SOURCE}
    assert by_source
    assert {hit.source for hit in by_source} == {MANUAL_SOURCE}
    assert by_project
    assert {hit.project for hit in by_project} == {"drone"}
    assert nothing == []


async def test_markdown_notes_are_cited_by_section(knowledge: KnowledgeBase) -> None:
    [hit, *_] = await search(knowledge, "What do the motor mounts need?")

    assert hit.source == NOTES_SOURCE
    assert hit.page is None
    assert hit.section == ["Drone project", "Frame"]
    assert "3 mm heat-set inserts" in hit.text


async def test_reingesting_the_same_content_changes_nothing(knowledge: KnowledgeBase) -> None:
    before = await knowledge.document_by_source(MANUAL_SOURCE)
    hits_before = await search(knowledge, "maximum nozzle temperature")

    result = await knowledge.ingest(
        MANUAL,
        source=MANUAL_SOURCE,
        source_kind=SourceKind.SHARE,
        name="mk4.pdf",
        collection="printers",
    )

    assert result.outcome is IngestOutcome.UNCHANGED
    assert result.document == before
    assert await knowledge.document_by_source(MANUAL_SOURCE) == before
    # The same chunks, by the same ids.
    assert await search(knowledge, "maximum nozzle temperature") == hits_before
    assert (await knowledge.counts()).documents == 3


async def test_same_content_under_another_source_is_another_document(
    knowledge: KnowledgeBase,
) -> None:
    result = await knowledge.ingest(
        MANUAL, source="upload:mk4-copy.pdf", source_kind=SourceKind.UPLOAD, name="mk4-copy.pdf"
    )

    assert result.outcome is IngestOutcome.INGESTED
    original = await knowledge.document_by_source(MANUAL_SOURCE)
    assert original is not None
    assert result.document.id != original.id
    assert result.document.content_hash == original.content_hash
    assert result.document.chunks == original.chunks
    sources = {hit.source for hit in await search(knowledge, "E3D-V6", SearchMode.KEYWORD)}
    assert sources == {MANUAL_SOURCE, "upload:mk4-copy.pdf"}


async def test_changed_content_replaces_the_old_chunks(knowledge: KnowledgeBase) -> None:
    before = await knowledge.document_by_source(MANUAL_SOURCE)
    assert before is not None
    revised = [list(page) for page in MANUAL_PAGES]
    revised[2][2] = (
        "The heatbed of the revised MK4 reaches a maximum temperature of 110 °C. The sheet "
        "is textured."
    )
    revised[2][4] = "The printer ships with the Revo Six hotend, nozzles change by hand."

    result = await knowledge.ingest(
        manual_pdf(revised),
        source=MANUAL_SOURCE,
        source_kind=SourceKind.SHARE,
        name="mk4.pdf",
        collection="printers",
    )

    assert result.outcome is IngestOutcome.REPLACED
    assert result.document.id == before.id
    assert result.document.content_hash != before.content_hash
    assert result.document.ingested_at > before.ingested_at
    # The old text is gone from both lists, the new one is found.
    assert await search(knowledge, "E3D-V6", SearchMode.KEYWORD) == []
    vector_hits = await search(knowledge, "maximum bed temperature MK4", SearchMode.VECTOR)
    texts = " ".join(hit.text for hit in vector_hits)
    assert "120 °C" not in texts
    assert "110 °C" in texts
    [revo] = await search(knowledge, "Revo Six", SearchMode.KEYWORD)
    assert revo.page == 3
    assert (await knowledge.counts()).documents == 3


async def test_delete_removes_the_chunks_from_both_lists(knowledge: KnowledgeBase) -> None:
    document = await knowledge.document_by_source(MANUAL_SOURCE)
    assert document is not None
    counts = await knowledge.counts()

    deleted = await knowledge.delete(document.id)

    assert deleted == document
    assert await knowledge.document(document.id) is None
    for mode in SearchMode:
        hits = await search(knowledge, "maximum nozzle temperature E3D-V6", mode, limit=50)
        assert all(hit.source != MANUAL_SOURCE for hit in hits)
    after = await knowledge.counts()
    assert after.documents == counts.documents - 1
    assert after.chunks == counts.chunks - document.chunks
    assert await knowledge.delete(document.id) is None


async def test_delete_by_source(knowledge: KnowledgeBase) -> None:
    deleted = await knowledge.delete_source(NOTES_SOURCE)

    assert deleted is not None
    assert deleted.source == NOTES_SOURCE
    assert await search(knowledge, "heat-set inserts", SearchMode.KEYWORD) == []
    assert await knowledge.delete_source(NOTES_SOURCE) is None


async def test_search_results_survive_a_reopen(
    knowledge_file: Path, minilm: MiniLMEmbedder
) -> None:
    queries = [question for question, _ in FACT_QUESTIONS]
    knowledge = await KnowledgeBase.open(knowledge_file, minilm, CHUNKING)
    try:
        added = await knowledge.ingest(
            b"The workshop door code changes every month.",
            source="upload:door.txt",
            source_kind=SourceKind.UPLOAD,
            name="door.txt",
        )
        before = [await search(knowledge, query) for query in queries]
    finally:
        await knowledge.close()

    reopened = await KnowledgeBase.open(knowledge_file, minilm, CHUNKING)
    try:
        after = [await search(reopened, query) for query in queries]
        assert await reopened.document(added.document.id) == added.document
        [door] = await search(reopened, "door code", SearchMode.KEYWORD)
    finally:
        await reopened.close()

    assert after == before
    assert door.source == "upload:door.txt"


async def test_another_embedder_reembeds_every_chunk(
    knowledge_file: Path, minilm: MiniLMEmbedder, caplog_info: pytest.LogCaptureFixture
) -> None:
    hashing = HashingEmbedder()
    knowledge = await KnowledgeBase.open(knowledge_file, hashing, CHUNKING)
    try:
        assert knowledge.embedder_id == "test-hashing-64"
        # Until re-embedded, no MiniLM vector is searched; words still find chunks.
        waiting = knowledge.chunks_to_embed
        unembedded = await knowledge.search(
            SearchRequest(query="maximum heatbed temperature", mode=SearchMode.VECTOR)
        )
        by_words = await knowledge.search(
            SearchRequest(query="maximum heatbed temperature", mode=SearchMode.KEYWORD)
        )
        await knowledge.embed_stale_chunks()
        response = await knowledge.search(
            SearchRequest(query="maximum heatbed temperature", mode=SearchMode.VECTOR, limit=50)
        )
        documents = await knowledge.documents()
        counts = await knowledge.counts()
        embedded = knowledge.chunks_to_embed
    finally:
        await knowledge.close()

    assert waiting == counts.chunks > 0
    assert embedded == 0
    assert unembedded.hits == []
    assert by_words.hits
    assert "Re-embedding" in caplog_info.text
    assert f"Re-embedded {counts.chunks} of {counts.chunks} chunks" in caplog_info.text
    assert response.embedder == "test-hashing-64"
    assert {document.embedder for document in documents} == {"test-hashing-64"}
    # Every chunk is a candidate, and each score is the cosine of the new embedder's
    # vectors: no MiniLM vector is searched with a hashing query, or the other way.
    assert len(response.hits) == counts.chunks
    [query] = hashing.encode(["maximum heatbed temperature"])
    for hit in response.hits:
        [vector] = hashing.encode([embedding_text(hit.title, hit.section, hit.text)])
        assert hit.score == pytest.approx(float(vector @ query), abs=1e-5)

    # And back: MiniLM's vectors are made again, and answer as before.
    caplog_info.clear()
    knowledge = await KnowledgeBase.open(knowledge_file, minilm, CHUNKING)
    try:
        await knowledge.embed_stale_chunks()
        hits = await search(knowledge, "What is the maximum bed temperature of the MK4?")
        documents = await knowledge.documents()
    finally:
        await knowledge.close()
    assert "Re-embedding" in caplog_info.text
    assert hits[0].page == 3
    assert {document.embedder for document in documents} == {MINILM_ID}


async def test_same_embedder_reopens_without_reembedding(
    knowledge_file: Path, minilm: MiniLMEmbedder, caplog_info: pytest.LogCaptureFixture
) -> None:
    knowledge = await KnowledgeBase.open(knowledge_file, minilm, CHUNKING)
    await knowledge.embed_stale_chunks()
    await knowledge.close()

    assert "Re-embed" not in caplog_info.text


async def test_a_corrupt_pdf_fails_alone(knowledge: KnowledgeBase) -> None:
    counts = await knowledge.counts()

    with pytest.raises(DocumentError) as caught:
        await knowledge.ingest(
            MANUAL[:1500],
            source="upload:broken.pdf",
            source_kind=SourceKind.UPLOAD,
            name="broken.pdf",
        )

    assert caught.value.code is DocumentErrorCode.CORRUPT_DOCUMENT
    assert "broken.pdf" in caught.value.message
    assert await knowledge.document_by_source("upload:broken.pdf") is None
    assert await knowledge.counts() == counts
    result = await knowledge.ingest(
        b"# Bandsaw\n\nThe bandsaw blade is 1712 mm long.",
        source="upload:saw.md",
        source_kind=SourceKind.UPLOAD,
        name="saw.md",
    )
    assert result.outcome is IngestOutcome.INGESTED
    [hit] = await search(knowledge, "bandsaw blade", SearchMode.KEYWORD)
    assert hit.source == "upload:saw.md"


async def test_a_failed_replacement_keeps_the_previous_version(knowledge: KnowledgeBase) -> None:
    before = await knowledge.document_by_source(MANUAL_SOURCE)

    with pytest.raises(DocumentError) as caught:
        await knowledge.ingest(
            MANUAL[:1500], source=MANUAL_SOURCE, source_kind=SourceKind.SHARE, name="mk4.pdf"
        )

    assert caught.value.code is DocumentErrorCode.CORRUPT_DOCUMENT
    assert await knowledge.document_by_source(MANUAL_SOURCE) == before
    [hit, *_] = await search(knowledge, "E3D-V6", SearchMode.KEYWORD)
    assert hit.source == MANUAL_SOURCE


async def test_concurrent_ingests_of_one_source_do_not_interleave(
    knowledge: KnowledgeBase,
) -> None:
    first = b"Compressor: drain the tank every week."
    second = b"Compressor: drain the tank every day."

    results = await asyncio.gather(
        *(
            knowledge.ingest(
                content,
                source="upload:compressor.txt",
                source_kind=SourceKind.UPLOAD,
                name="compressor.txt",
            )
            for content in (first, second)
        )
    )

    assert [result.outcome for result in results] == [
        IngestOutcome.INGESTED,
        IngestOutcome.REPLACED,
    ]
    assert results[0].document.id == results[1].document.id
    hits = await search(knowledge, "drain the tank", SearchMode.KEYWORD)
    assert [hit.text for hit in hits] == ["Compressor: drain the tank every day."]


async def test_documents_are_listed_newest_first_with_filters(knowledge: KnowledgeBase) -> None:
    everything = await knowledge.documents()
    printers = await knowledge.documents(collection="printers")
    drone = await knowledge.documents(project="drone")
    uploads = await knowledge.documents(source_kind=SourceKind.UPLOAD, limit=1)
    unlimited = await knowledge.documents(limit=None)

    assert [document.source for document in everything] == [
        ENDER_SOURCE,
        NOTES_SOURCE,
        MANUAL_SOURCE,
    ]
    assert unlimited == everything
    assert [document.source for document in printers] == [MANUAL_SOURCE]
    assert [document.source for document in drone] == [NOTES_SOURCE]
    assert [document.source for document in uploads] == [ENDER_SOURCE]
    [manual] = printers
    assert manual.pages == 5
    assert manual.media_type == "application/pdf"
    assert manual.size_bytes == len(MANUAL)
    assert manual.chunks >= 5
    assert manual.embedder == MINILM_ID


async def test_counts_follow_ingests_and_deletions(knowledge: KnowledgeBase) -> None:
    counts = await knowledge.counts()
    documents = await knowledge.documents()
    assert counts.documents == 3
    assert counts.chunks == sum(document.chunks for document in documents)
    assert counts.last_ingest_title == "ender3"

    added = await knowledge.ingest(
        DRONE_NOTES.replace(b"Drone project", b"Drone project v2"),
        source="upload:drone2.md",
        source_kind=SourceKind.UPLOAD,
        name="drone2.md",
        title="Drone notes, second draft",
    )

    counts = await knowledge.counts()
    assert counts.documents == 4
    assert counts.last_ingest_title == "Drone notes, second draft"
    assert counts.last_ingest_at == added.document.ingested_at
    await knowledge.delete(added.document.id)
    assert (await knowledge.counts()).last_ingest_title == "ender3"


async def test_an_empty_knowledge_base_answers_nothing(
    tmp_path: Path, minilm: MiniLMEmbedder
) -> None:
    knowledge = await KnowledgeBase.open(tmp_path / "empty.sqlite3", minilm, CHUNKING)
    try:
        hits = [await search(knowledge, "heatbed", mode) for mode in SearchMode]
        counts = await knowledge.counts()
    finally:
        await knowledge.close()

    assert hits == [[], [], []]
    assert (counts.documents, counts.chunks, counts.last_ingest_at) == (0, 0, None)


class FlakyEmbedder(HashingEmbedder):
    """The hashing embedder, as a remote one that can go down (a router being restarted)."""

    def __init__(self) -> None:
        self.down = False

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.down:
            raise ConnectionError("the embedding server is not answering")
        return self.encode(texts)


async def test_an_embedder_outage_spares_keyword_search_and_stored_documents(
    tmp_path: Path,
) -> None:
    embedder = FlakyEmbedder()
    knowledge = await KnowledgeBase.open(tmp_path / "knowledge.sqlite3", embedder, CHUNKING)
    try:
        await knowledge.ingest(
            ENDER_MANUAL, source=ENDER_SOURCE, source_kind=SourceKind.UPLOAD, name="ender3.txt"
        )
        before = await knowledge.document_by_source(ENDER_SOURCE)
        embedder.down = True

        # The embedder's own error, not wrapped, for the service to report.
        with pytest.raises(ConnectionError, match="not answering"):
            await search(knowledge, "heated bed", SearchMode.HYBRID)
        with pytest.raises(ConnectionError):
            await knowledge.ingest(
                ENDER_MANUAL + b"\nNew: print at 0.2 mm layers.",
                source=ENDER_SOURCE,
                source_kind=SourceKind.UPLOAD,
                name="ender3.txt",
            )
        keyword = await search(knowledge, "heated bed", SearchMode.KEYWORD)
        after = await knowledge.document_by_source(ENDER_SOURCE)
    finally:
        await knowledge.close()

    assert keyword
    assert keyword[0].source == ENDER_SOURCE
    assert after == before


class SignallingEmbedder(HashingEmbedder):
    """The hashing embedder, cancelling a task right after one batch when asked to."""

    def __init__(self) -> None:
        self.cancel_after_embedding: asyncio.Task[object] | None = None

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.cancel_after_embedding is not None:
            # Lands once the ingest has gone on to write what was embedded.
            asyncio.get_running_loop().call_soon(self.cancel_after_embedding.cancel)
            self.cancel_after_embedding = None
        return self.encode(texts)


async def test_a_cancelled_ingest_is_still_written_whole(tmp_path: Path) -> None:
    # An HTTP client that hangs up while its upload is being stored cancels the ingest.
    embedder = SignallingEmbedder()
    knowledge = await KnowledgeBase.open(tmp_path / "knowledge.sqlite3", embedder, CHUNKING)
    try:
        ingest = asyncio.create_task(
            knowledge.ingest(
                ENDER_MANUAL, source=ENDER_SOURCE, source_kind=SourceKind.UPLOAD, name="ender3.txt"
            )
        )
        embedder.cancel_after_embedding = ingest
        with pytest.raises(asyncio.CancelledError):
            await ingest

        stored = await knowledge.document_by_source(ENDER_SOURCE)
        vector = await search(knowledge, "Ender-3 heated bed", SearchMode.VECTOR, limit=50)
        keyword = await search(knowledge, "Ender-3 heated bed", SearchMode.KEYWORD, limit=50)
    finally:
        await knowledge.close()

    # The document was stored, and the vector index knows its chunks as the store does.
    assert stored is not None
    assert {hit.chunk_id for hit in vector} == {hit.chunk_id for hit in keyword}
    assert len(vector) == stored.chunks
