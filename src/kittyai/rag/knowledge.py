"""The knowledge base: documents in, cited chunks out, by hybrid search.

A document is parsed into blocks, cut into chunks along its pages and headings,
embedded, and stored with its full-text rows in one transaction. Searches rank chunks
twice, by the cosine of their vectors to the query's (exact, over an in-memory
matrix) and by FTS5's BM25 over their words, and fuse both rankings by reciprocal
rank: `sum(1 / (60 + rank))` over the lists a chunk is in. Vectors find paraphrases
("how hot can the build plate get"); words find what embeddings blur, like part
numbers ("E3D-V6"); the fusion needs no calibration between their scores. In the
fusion the words' list holds only chunks with every term of the query: a chunk that
shares one common word with a paraphrase ("mk4") would otherwise push down what the
vectors found, and on the shipped query set it did (Recall@5 0.89 fused with any
term, 0.97 with every term, 0.93 by vectors alone). Keyword mode alone ranks chunks
with any term, as BM25 is meant to.

The matrix is loaded when the knowledge base opens and kept in step with every
ingest and deletion. Filters (collection, source, project) are resolved in memory
to the allowed chunk ids, so a filtered search stays exact without asking SQLite
about every chunk. Only vectors of the embedder the base was opened with are searched:
after a change of embedder, `embed_stale_chunks` gives every chunk a new vector, in
batches, while searches rank by the chunks already done (and by their words).
"""

import asyncio
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
import hashlib
import logging
from pathlib import Path
from typing import Self

import numpy as np
import numpy.typing as npt

from kittyai.contract.rag import (
    DEFAULT_COLLECTION,
    DocumentInfo,
    IngestOutcome,
    IngestResult,
    SearchHit,
    SearchMode,
    SearchRequest,
    SearchResponse,
    SourceKind,
)
from kittyai.embedding import Embedder
from kittyai.rag.chunking import ChunkDraft, TokenCounter, chunk_document, default_token_counter
from kittyai.rag.index import ExactIndex, VectorIndex
from kittyai.rag.options import ChunkingOptions
from kittyai.rag.parsing import DocumentError, ParsedDocument, parse_document
from kittyai.rag.store import (
    EMBEDDER_KEY,
    DocumentFilter,
    DocumentLabels,
    KnowledgeCounts,
    KnowledgeStore,
    NewDocument,
    heading_text,
    keyword_expression,
)

__all__ = ["DocumentError", "KnowledgeBase", "KnowledgeCounts", "embedding_text"]

_LOGGER = logging.getLogger(__name__)

# The k of reciprocal-rank fusion, from Cormack et al. (SIGIR 2009): large enough that
# the first few ranks of one list do not drown the other.
RRF_K = 60
# Each list contributes max(limit * 4, 50) candidates: enough that a chunk ranked
# modestly in both lists can still be fused to the top.
CANDIDATES_PER_HIT = 4
MIN_CANDIDATES = 50
# Chunks per embedding call and per transaction when re-embedding the whole base.
REEMBED_BATCH = 256


def embedding_text(title: str, section: Sequence[str], text: str) -> str:
    """Return what a chunk is embedded from: the document's title, the section path, the text.

    A chunk's sentences often do not name what they are about ("It reaches 120 °C");
    its headings do ("MK4 Manual > Specifications > Heatbed"). With them, a question
    naming the subject lands near the chunk. They go first because MiniLM reads only
    the first 256 word pieces.
    """
    return f"{heading_text(title, section)}\n{text}"


class KnowledgeBase:
    """Documents, their chunks and vectors in one SQLite file, searched by hybrid retrieval."""

    def __init__(
        self,
        store: KnowledgeStore,
        embedder: Embedder,
        *,
        chunking: ChunkingOptions,
        counter: TokenCounter,
        index: VectorIndex,
        labels: dict[str, DocumentLabels],
        chunk_ids: dict[str, npt.NDArray[np.int64]],
    ) -> None:
        """Search `index` and `store` with `embedder`; use `open` instead."""
        self._store = store
        self._embedder = embedder
        self._chunking = chunking
        self._counter = counter
        self._index = index
        # What filters need, per document: kept in step with the store.
        self._labels = labels
        self._chunk_ids = chunk_ids
        # Ingests and deletions one at a time: two of one source must not interleave,
        # and the index must follow the store in the order the store changed.
        self._write_lock = asyncio.Lock()
        # Changes running on after their caller was cancelled; see `_finish`.
        self._changes: set[asyncio.Task[object]] = set()

    @classmethod
    async def open(cls, path: Path, embedder: Embedder, chunking: ChunkingOptions) -> Self:
        """Open or create the knowledge base at `path`, searched with `embedder`'s vectors.

        Chunks whose vectors are from another embedder (another id or dimension) are
        not searched by vector until `embed_stale_chunks` has given them new ones.
        """
        store = await KnowledgeStore.open(path)
        try:
            counter = await asyncio.to_thread(default_token_counter)
            ids, vectors = await store.load_vectors(embedder.id, embedder.dim)
            index = ExactIndex(embedder.dim)
            index.add(ids, vectors)
            labels = await store.labels()
            chunk_ids = {
                document_id: np.asarray(document_chunks, dtype=np.int64)
                for document_id, document_chunks in (await store.chunk_ids()).items()
            }
        except BaseException:
            await store.close()
            raise
        _LOGGER.debug("Opened %s: %d documents, %d vectors", path, len(labels), len(index))
        return cls(
            store,
            embedder,
            chunking=chunking,
            counter=counter,
            index=index,
            labels=labels,
            chunk_ids=chunk_ids,
        )

    async def close(self) -> None:
        """Close the file once changes being written are; ingests still embedding fail."""
        if self._changes:
            await asyncio.wait(self._changes)
        await self._store.close()

    @property
    def embedder_id(self) -> str:
        """The id of the embedder every vector is from."""
        return self._embedder.id

    async def ingest(
        self,
        content: bytes,
        *,
        source: str,
        source_kind: SourceKind,
        name: str,
        media_type: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        project: str | None = None,
        title: str | None = None,
    ) -> IngestResult:
        """Add a document, or replace the one of `source` if its content changed.

        Content already stored under `source` (same SHA-256) is left as it is, its
        labels included: the outcome is UNCHANGED and nothing is written. The same
        content under another source is another document.

        Args:
            content: the document's bytes.
            source: what identifies it across re-ingests, e.g. `share:manuals/mk4.pdf`.
            source_kind: where it came from.
            name: its file name: the type comes from its suffix unless `media_type` says.
            media_type: its media type, if known.
            collection: the collection it belongs to.
            project: the project it belongs to, if any.
            title: its title; by default the one the document gives, else its file name.

        Raises:
            DocumentError: the document cannot be read; the previous version, if any,
                stays as it was. The embedder's errors pass through the same way.
        """
        content_hash = await asyncio.to_thread(_sha256, content)
        async with self._write_lock:
            existing = await self._store.document_by_source(source)
            if existing is not None and existing.content_hash == content_hash:
                return IngestResult(outcome=IngestOutcome.UNCHANGED, document=existing)
            parsed, drafts = await asyncio.to_thread(self._prepare, content, name, media_type)
            document_title = title or parsed.title
            vectors = await self._embed(
                [embedding_text(document_title, draft.section, draft.text) for draft in drafts]
            )
            document = await self._finish(
                self._write(
                    NewDocument(
                        source=source,
                        source_kind=source_kind,
                        title=document_title,
                        collection=collection,
                        project=project,
                        media_type=parsed.media_type,
                        content_hash=content_hash,
                        size_bytes=len(content),
                        pages=parsed.pages,
                        embedder=self._embedder.id,
                        ingested_at=datetime.now(UTC),
                    ),
                    drafts,
                    vectors,
                    replacing=None if existing is None else existing.id,
                )
            )
        outcome = IngestOutcome.INGESTED if existing is None else IngestOutcome.REPLACED
        # By title and id: a source may be a URL with a token in it.
        _LOGGER.info(
            "%s %r (%s): %d pages, %d chunks",
            outcome.value.capitalize(),
            document.title,
            document.id,
            document.pages,
            document.chunks,
        )
        return IngestResult(outcome=outcome, document=document)

    async def delete(self, document_id: str) -> DocumentInfo | None:
        """Delete a document with its chunks; return it, or None if there is none."""
        async with self._write_lock:
            document = await self._store.document(document_id)
            if document is not None:
                await self._finish(self._delete(document))
        return document

    async def delete_source(self, source: str) -> DocumentInfo | None:
        """Delete the document of `source` with its chunks; return it, or None."""
        async with self._write_lock:
            document = await self._store.document_by_source(source)
            if document is not None:
                await self._finish(self._delete(document))
        return document

    async def document(self, document_id: str) -> DocumentInfo | None:
        """Return the document with `document_id`, or None."""
        return await self._store.document(document_id)

    async def document_by_source(self, source: str) -> DocumentInfo | None:
        """Return the document of `source`, or None."""
        return await self._store.document_by_source(source)

    async def documents(
        self,
        *,
        collection: str | None = None,
        project: str | None = None,
        source_kind: SourceKind | None = None,
        limit: int | None = 100,
    ) -> list[DocumentInfo]:
        """Return up to `limit` (None: all) documents of the collection, project and kind.

        Newest first.
        """
        where = DocumentFilter(collection=collection, project=project, source_kind=source_kind)
        return await self._store.documents(where, limit)

    async def search(self, request: SearchRequest) -> SearchResponse:
        """Return the chunks that best answer `request.query`, ranked as `request.mode` says."""
        where = DocumentFilter(
            collection=request.collection, source=request.source, project=request.project
        )
        candidates = max(request.limit * CANDIDATES_PER_HIT, MIN_CANDIDATES)
        allowed = self._allowed_chunks(where)
        # Vectors are searched unless the mode is keyword or the filter allows no chunk.
        wants_vector = request.mode is not SearchMode.KEYWORD and (
            allowed is None or len(allowed) > 0
        )
        # The query's embedding and the full-text query run at the same time; gather
        # (not a task group) lets an embedder's error reach the caller as it is. The
        # exact search waits for both: run beside SQLite's search, the two would only
        # compete for the same cores.
        query_vectors, keyword = await asyncio.gather(
            self._embed([request.query]) if wants_vector else _nothing(),
            self._keyword_ranking(
                request.query,
                where,
                candidates,
                every_term=request.mode is SearchMode.HYBRID,
            )
            if request.mode is not SearchMode.VECTOR
            else _no_ranking(),
        )
        vector = []
        if query_vectors is not None:
            ids, scores = self._index.search(query_vectors[0], candidates, allowed)
            vector = list(zip(ids.tolist(), scores.tolist(), strict=True))

        if request.mode is SearchMode.VECTOR:
            ranked = vector
        elif request.mode is SearchMode.KEYWORD:
            # FTS5's BM25 is lower for better matches; hits say higher is better.
            ranked = [(chunk_id, -score) for chunk_id, score in keyword]
        else:
            ranked = _fuse(vector, keyword)
        top = ranked[: request.limit]
        vector_rank = {chunk_id: rank for rank, (chunk_id, _) in enumerate(vector, start=1)}
        keyword_rank = {chunk_id: rank for rank, (chunk_id, _) in enumerate(keyword, start=1)}
        rows = await self._store.chunks([chunk_id for chunk_id, _ in top])
        hits = [
            SearchHit(
                chunk_id=chunk_id,
                document_id=row.document_id,
                text=row.text,
                score=score,
                source=row.source,
                source_kind=row.source_kind,
                title=row.title,
                collection=row.collection,
                project=row.project,
                page=row.page,
                section=list(row.section),
                vector_rank=vector_rank.get(chunk_id),
                keyword_rank=keyword_rank.get(chunk_id),
            )
            for chunk_id, score in top
            # A chunk deleted while this search ran is left out.
            if (row := rows.get(chunk_id)) is not None
        ]
        return SearchResponse(
            query=request.query, mode=request.mode, embedder=self._embedder.id, hits=hits
        )

    async def counts(self) -> KnowledgeCounts:
        """Return the number of documents and chunks, and when the newest was ingested."""
        return await self._store.counts()

    @property
    def chunks_to_embed(self) -> int:
        """How many chunks, notes' included, still have no vector of this base's embedder."""
        # The index holds exactly the chunks that have one: those read at open and
        # those written since, kept in step as chunks come and go.
        chunks = sum(len(document_chunks) for document_chunks in self._chunk_ids.values())
        return chunks - len(self._index)

    async def embed_stale_chunks(self) -> None:
        """Give every chunk a vector of this base's embedder, if some have another's.

        It runs beside ingests and searches, a batch at a time, logging progress; a
        chunk deleted meanwhile is skipped. The embedder's errors pass through: what
        was stored stays, and calling again carries on from there.
        """
        embedder = self._embedder
        previous = await self._store.meta(EMBEDDER_KEY)
        stale = self.chunks_to_embed
        if stale:
            _LOGGER.info(
                "Re-embedding %d chunks with %s (%d dimensions); they were embedded by %s",
                stale,
                embedder.id,
                embedder.dim,
                previous or "another embedder",
            )
        done = 0
        while batch := await self._store.stale_chunks(embedder.id, embedder.dim, REEMBED_BATCH):
            vectors = await self._embed(
                [embedding_text(chunk.title, chunk.section, chunk.text) for chunk in batch]
            )
            async with self._write_lock:
                await self._finish(self._add_vectors([chunk.id for chunk in batch], vectors))
            done += len(batch)
            _LOGGER.info("Re-embedded %d of %d chunks", done, stale)
        if stale or previous != embedder.id:
            await self._store.finish_reembedding(embedder.id)

    def _prepare(
        self, content: bytes, name: str, media_type: str | None
    ) -> tuple[ParsedDocument, list[ChunkDraft]]:
        """Parse and chunk a document; runs in a worker thread."""
        parsed = parse_document(content, name=name, media_type=media_type)
        return parsed, chunk_document(parsed, self._chunking, self._counter)

    async def _embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        return _checked(await self._embedder.embed(texts), self._embedder, len(texts))

    async def _finish[T](self, change: Coroutine[None, None, T]) -> T:
        """Run a change of the store and the index to its end, even if the caller is cancelled.

        Cancelled halfway, the store would have changed and the index not: searches
        would miss the new chunks until a restart.
        """
        task = asyncio.create_task(change)
        self._changes.add(task)
        task.add_done_callback(self._changes.discard)
        return await asyncio.shield(task)

    async def _write(
        self,
        document: NewDocument,
        drafts: list[ChunkDraft],
        vectors: npt.NDArray[np.float32],
        *,
        replacing: str | None,
    ) -> DocumentInfo:
        stored, new_ids, removed = await self._store.write_document(
            document, drafts, vectors, replacing=replacing
        )
        self._index.remove(removed)
        self._index.add(new_ids, vectors)
        self._labels[stored.id] = DocumentLabels(
            source=stored.source,
            source_kind=stored.source_kind,
            collection=stored.collection,
            project=stored.project,
        )
        self._chunk_ids[stored.id] = np.asarray(new_ids, dtype=np.int64)
        return stored

    async def _add_vectors(self, ids: list[int], vectors: npt.NDArray[np.float32]) -> None:
        written = await self._store.write_vectors(ids, vectors, self._embedder.id)
        kept = np.isin(np.asarray(ids, dtype=np.int64), np.asarray(written, dtype=np.int64))
        self._index.add(written, vectors[kept])

    async def _delete(self, document: DocumentInfo) -> None:
        removed = await self._store.delete_document(document.id)
        self._index.remove(removed)
        self._labels.pop(document.id, None)
        self._chunk_ids.pop(document.id, None)
        _LOGGER.info("Deleted %r (%s): %d chunks", document.title, document.id, len(removed))

    async def _keyword_ranking(
        self, query: str, where: DocumentFilter, candidates: int, *, every_term: bool
    ) -> list[tuple[int, float]]:
        expression = keyword_expression(query, every_term=every_term)
        if expression is None:
            return []
        return await self._store.keyword_search(expression, where, candidates)

    def _allowed_chunks(self, where: DocumentFilter) -> npt.NDArray[np.int64] | None:
        """Return the ids of the chunks `where` allows, or None when it allows all."""
        if where == DocumentFilter():
            return None
        chunk_ids = [
            document_chunks
            for document_id, document_chunks in self._chunk_ids.items()
            if where.matches(self._labels[document_id])
        ]
        if not chunk_ids:
            return np.empty(0, dtype=np.int64)
        return np.concatenate(chunk_ids)


async def _no_ranking() -> list[tuple[int, float]]:
    return []


async def _nothing() -> None:
    return None


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _checked(vectors: np.ndarray, embedder: Embedder, count: int) -> npt.NDArray[np.float32]:
    """Return the embedder's answer as float32 rows, or raise if it has the wrong shape."""
    if vectors.shape != (count, embedder.dim):
        raise ValueError(
            f"the embedder {embedder.id} gave vectors of shape {vectors.shape};"
            f" expected ({count}, {embedder.dim})"
        )
    return np.asarray(vectors, dtype=np.float32)


def _fuse(
    vector: list[tuple[int, float]], keyword: list[tuple[int, float]]
) -> list[tuple[int, float]]:
    """Return chunk ids by reciprocal-rank fusion of both rankings, best first."""
    fused: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for ranking in (vector, keyword):
        for rank, (chunk_id, _) in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            best_rank[chunk_id] = min(best_rank.get(chunk_id, rank), rank)
    # Equal sums (rank 3 in one list only, in either list) go to the better single rank.
    return sorted(fused.items(), key=lambda item: (-item[1], best_rank[item[0]]))
