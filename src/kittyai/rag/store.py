"""The knowledge base's SQLite file: documents, chunks, their full-text index and vectors.

One file holds everything, so a document and its chunks, FTS rows and vectors are
written, replaced and deleted in one transaction: a crash leaves the old version or
the new one, never a mix.

Full-text search is FTS5 over each chunk's text and its headings (the document's
title and the section path, so "Heatbed" finds the chunks under that heading). The
tokenizer is unicode61 with the Porter stemmer ("temperatures" finds "temperature").
It splits at '-' and '.', and every query term is quoted (see `keyword_expression`),
so a part number typed as "E3D-V6" is the phrase e3d + v6: it finds "E3D-V6" (and
"E3D V6") but not a lone "V6". Keeping '-' and '.' inside tokens instead
(`tokenchars`) would glue every sentence's final period to its last word, so
"temperature." would no longer match "temperature".

Vectors are float32 blobs, each with the id and dimension of the embedder that made
it; `meta` records the embedder the whole file was last brought to.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
import json
import re
import secrets
import sqlite3

import numpy as np
import numpy.typing as npt

from kittyai.contract.rag import DocumentInfo, SourceKind
from kittyai.rag.chunking import ChunkDraft
from kittyai.sqlite import SqliteStore, from_epoch_us, to_epoch_us, transaction

ID_BYTES = 8
# Little-endian float32 whatever the machine, so a file can move between hosts.
VECTOR_DTYPE = np.dtype("<f4")
EMBEDDER_KEY = "embedder"
# At most this many distinct query terms go into a full-text query: a pasted paragraph
# is still a quick query.
MAX_KEYWORD_TERMS = 32

# Migration N brings the schema from `PRAGMA user_version` N-1 to N; append, never edit.
_MIGRATIONS = (
    """
    CREATE TABLE documents (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL UNIQUE,
        source_kind TEXT NOT NULL,
        title TEXT NOT NULL,
        collection TEXT NOT NULL,
        project TEXT,
        media_type TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        pages INTEGER NOT NULL,
        embedder TEXT NOT NULL,
        -- UTC, in whole microseconds since the epoch: exact, and ordered like time.
        ingested_at_us INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX documents_by_time ON documents (ingested_at_us);
    CREATE INDEX documents_by_collection ON documents (collection);
    CREATE INDEX documents_by_project ON documents (project);
    -- AUTOINCREMENT: a chunk id is never reused, so an id a search found a moment ago
    -- cannot name another document's chunk once that one is replaced.
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
        ordinal INTEGER NOT NULL,
        text TEXT NOT NULL,
        page INTEGER,
        -- The section path as a JSON array of headings, outermost first.
        section TEXT NOT NULL,
        tokens INTEGER NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX chunks_by_document ON chunks (document_id, ordinal);
    -- rowid is the chunk id.
    CREATE VIRTUAL TABLE chunks_fts USING fts5 (
        text, heading, tokenize = 'porter unicode61 remove_diacritics 2'
    );
    CREATE TABLE vectors (
        chunk_id INTEGER PRIMARY KEY REFERENCES chunks (id) ON DELETE CASCADE,
        embedder TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL
    ) STRICT;
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
    """,
)
_HEADING_SEPARATOR = " > "
# Words that say nothing about which chunk answers: in nearly every chunk, they would
# only make the full-text query slow. Kept when a query has nothing else.
_STOP_WORD_TEXT = (
    "a about an and are as at be by can could do does for from has have how i if in is it"
    " its me my of on or should than that the their there these this to was what when where"
    " which who why will with would you your"
)
_STOP_WORDS = frozenset(_STOP_WORD_TEXT.split())
# A query term: letters and digits, joined by the marks part numbers and sizes use
# inside them ("E3D-V6", "PN-2045-B", "1.75", "24V/40W", "don't"). Anything else, FTS
# syntax included, separates terms.
_QUERY_TERM = re.compile(r"[^\W_]+(?:['\u2019./-][^\W_]+)*")

_DOCUMENT_COLUMNS = (
    "documents.id, source, source_kind, title, collection, project, media_type,"
    " content_hash, size_bytes, pages, embedder, ingested_at_us,"
    " (SELECT COUNT(*) FROM chunks WHERE chunks.document_id = documents.id) AS chunk_count"
)
_INSERT_DOCUMENT = (
    "INSERT INTO documents (id, source, source_kind, title, collection, project, media_type,"
    " content_hash, size_bytes, pages, embedder, ingested_at_us) VALUES (:id, :source,"
    " :source_kind, :title, :collection, :project, :media_type, :content_hash, :size_bytes,"
    " :pages, :embedder, :ingested_at_us)"
)
_UPDATE_DOCUMENT = (
    "UPDATE documents SET source_kind = :source_kind, title = :title, collection = :collection,"
    " project = :project, media_type = :media_type, content_hash = :content_hash,"
    " size_bytes = :size_bytes, pages = :pages, embedder = :embedder,"
    " ingested_at_us = :ingested_at_us WHERE id = :id"
)
_INSERT_CHUNK = (
    "INSERT INTO chunks (document_id, ordinal, text, page, section, tokens)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_UPSERT_VECTOR = (
    "INSERT INTO vectors (chunk_id, embedder, dim, vector) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (chunk_id) DO UPDATE SET embedder = excluded.embedder, dim = excluded.dim,"
    " vector = excluded.vector"
)
_STALE_CHUNKS = (
    "FROM chunks JOIN documents ON documents.id = chunks.document_id"
    " LEFT JOIN vectors ON vectors.chunk_id = chunks.id"
    " WHERE vectors.chunk_id IS NULL OR vectors.embedder != ? OR vectors.dim != ?"
)
_HIT_COLUMNS = (
    "chunks.id AS chunk_id, chunks.document_id, chunks.text, chunks.page, chunks.section,"
    " documents.source, documents.source_kind, documents.title, documents.collection,"
    " documents.project"
)


@dataclass(frozen=True, slots=True)
class DocumentFilter:
    """Which documents a listing or a search covers; None matches any."""

    collection: str | None = None
    source: str | None = None
    project: str | None = None
    source_kind: SourceKind | None = None

    def matches(self, labels: DocumentLabels) -> bool:
        """Return whether a document with `labels` passes the filter."""
        return (
            (self.collection is None or labels.collection == self.collection)
            and (self.source is None or labels.source == self.source)
            and (self.project is None or labels.project == self.project)
            and (self.source_kind is None or labels.source_kind is self.source_kind)
        )

    def sql(self) -> tuple[str, list[object]]:
        """Return the filter as SQL conditions on `documents` (joined with AND) and values."""
        conditions = []
        values: list[object] = []
        for column, value in (
            ("documents.collection", self.collection),
            ("documents.source", self.source),
            ("documents.project", self.project),
            ("documents.source_kind", self.source_kind),
        ):
            if value is not None:
                conditions.append(f"{column} = ?")
                values.append(str(value))
        return " AND ".join(conditions), values


@dataclass(frozen=True, slots=True)
class DocumentLabels:
    """What searches filter a document's chunks by."""

    source: str
    source_kind: SourceKind
    collection: str
    project: str | None


@dataclass(frozen=True, slots=True)
class NewDocument:
    """A document to write, without its chunks."""

    source: str
    source_kind: SourceKind
    title: str
    collection: str
    project: str | None
    media_type: str
    content_hash: str
    size_bytes: int
    pages: int
    embedder: str
    ingested_at: datetime


@dataclass(frozen=True, slots=True)
class StaleChunk:
    """A chunk whose vector is missing or from another embedder, with what it is embedded from."""

    id: int
    title: str
    section: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """A stored chunk with its document's labels: what a search hit shows."""

    chunk_id: int
    document_id: str
    text: str
    page: int | None
    section: tuple[str, ...]
    source: str
    source_kind: SourceKind
    title: str
    collection: str
    project: str | None


@dataclass(frozen=True, slots=True)
class KnowledgeCounts:
    """Sizes of the store and its newest document; project notes are not documents here."""

    documents: int
    chunks: int
    last_ingest_at: datetime | None
    last_ingest_title: str | None


def heading_text(title: str, section: Sequence[str]) -> str:
    """Return a chunk's headings as one line: the document's title, then its section path."""
    return _HEADING_SEPARATOR.join([title, *section])


def keyword_expression(query: str, *, every_term: bool = False) -> str | None:
    """Return an FTS5 expression of the terms of `query`, or None if it has none.

    It matches chunks with any of the terms, or with every one when `every_term`.
    Every term is quoted (terms hold no quotes), so nothing the user types is FTS
    syntax: `AND`, `NEAR(`, `col:` and a lone `"` are searched as the words they
    contain. FTS5 reads a quoted term as a phrase of its tokens, so "E3D-V6" matches
    the tokens e3d and v6 next to each other.
    """
    terms: dict[str, str] = {}
    for match in _QUERY_TERM.finditer(query):
        terms.setdefault(match.group().lower(), match.group())
    # "what's" and "it's" are as empty as "what" and "it".
    meaningful = [
        term
        for key, term in terms.items()
        if re.split(r"['\u2019]", key, maxsplit=1)[0] not in _STOP_WORDS
    ]
    chosen = (meaningful or list(terms.values()))[:MAX_KEYWORD_TERMS]
    if not chosen:
        return None
    return (" AND " if every_term else " OR ").join(f'"{term}"' for term in chosen)


def new_document_id() -> str:
    """Return a fresh random document id."""
    return secrets.token_hex(ID_BYTES)


class KnowledgeStore(SqliteStore):
    """The documents, chunks, full-text index and vectors of one knowledge base."""

    migrations = _MIGRATIONS
    thread_name = "rag-store"

    async def meta(self, key: str) -> str | None:
        """Return the value stored under `key` in the meta table, or None."""
        return await self._database.run(_select_meta, key)

    async def set_meta(self, key: str, value: str) -> None:
        """Store `value` under `key` in the meta table."""
        await self._database.run(_upsert_meta, key, value)

    async def document(self, document_id: str) -> DocumentInfo | None:
        """Return the document with `document_id`, or None."""
        documents = await self._database.run(
            _select_documents, "WHERE documents.id = ?", [document_id], 1
        )
        return documents[0] if documents else None

    async def document_by_source(self, source: str) -> DocumentInfo | None:
        """Return the document of `source`, or None."""
        documents = await self._database.run(
            _select_documents, "WHERE documents.source = ?", [source], 1
        )
        return documents[0] if documents else None

    async def documents(self, where: DocumentFilter, limit: int | None) -> list[DocumentInfo]:
        """Return up to `limit` (None: all) documents passing `where`, newest first."""
        conditions, values = where.sql()
        clause = f"WHERE {conditions}" if conditions else ""
        # SQLite reads a negative LIMIT as none.
        return await self._database.run(
            _select_documents, clause, values, -1 if limit is None else limit
        )

    async def labels(self) -> dict[str, DocumentLabels]:
        """Return every document's labels by document id."""
        return await self._database.run(_select_labels)

    async def chunk_ids(self) -> dict[str, list[int]]:
        """Return every document's chunk ids by document id."""
        return await self._database.run(_select_chunk_ids)

    async def write_document(
        self,
        document: NewDocument,
        chunks: Sequence[ChunkDraft],
        vectors: npt.NDArray[np.float32],
        *,
        replacing: str | None,
    ) -> tuple[DocumentInfo, list[int], list[int]]:
        """Store a document with its chunks and vectors, in place of `replacing` if given.

        One transaction: the replaced document's chunks, FTS rows and vectors go, and
        the new ones come, together. The replaced document keeps its id.

        Returns:
            The stored document, the new chunk ids (in chunk order) and the removed ones.
        """
        return await self._database.run(_write_document, document, chunks, vectors, replacing)

    async def delete_document(self, document_id: str) -> list[int]:
        """Delete a document with its chunks, FTS rows and vectors; return the chunk ids."""
        return await self._database.run(_delete_document, document_id)

    async def load_vectors(
        self, embedder: str, dim: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Return the ids and vectors of the chunks embedded by `embedder` at `dim`."""
        return await self._database.run(_select_vectors, embedder, dim)

    async def stale_chunks(self, embedder: str, dim: int, limit: int) -> list[StaleChunk]:
        """Return up to `limit` chunks without a vector of `embedder` at `dim`, by id."""
        return await self._database.run(_select_stale, embedder, dim, limit)

    async def write_vectors(
        self, ids: Sequence[int], vectors: npt.NDArray[np.float32], embedder: str
    ) -> list[int]:
        """Store the vectors of chunks `ids`, made by `embedder`, replacing their old ones.

        Chunks deleted meanwhile are skipped; return the ids whose vectors were stored.
        """
        return await self._database.run(_write_vectors, ids, vectors, embedder)

    async def finish_reembedding(self, embedder: str) -> None:
        """Record that every chunk now has a vector of `embedder`."""
        await self._database.run(_finish_reembedding, embedder)

    async def keyword_search(
        self, expression: str, where: DocumentFilter, limit: int
    ) -> list[tuple[int, float]]:
        """Return up to `limit` (chunk id, BM25) matching an FTS5 expression, best first.

        BM25 is FTS5's: lower is better, so the best come first.
        """
        return await self._database.run(_keyword_search, expression, where, limit)

    async def chunks(self, ids: Sequence[int]) -> dict[int, ChunkRow]:
        """Return the chunks of `ids` that exist, with their documents' labels, by id."""
        return await self._database.run(_select_chunks, ids)

    async def counts(self) -> KnowledgeCounts:
        """Return the number of documents and chunks and the newest document."""
        return await self._database.run(_select_counts)


def _select_meta(connection: sqlite3.Connection, key: str) -> str | None:
    row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row["value"])


def _upsert_meta(connection: sqlite3.Connection, key: str, value: str) -> None:
    connection.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _document_info(row: sqlite3.Row) -> DocumentInfo:
    return DocumentInfo(
        id=row["id"],
        source=row["source"],
        source_kind=SourceKind(row["source_kind"]),
        title=row["title"],
        collection=row["collection"],
        project=row["project"],
        media_type=row["media_type"],
        content_hash=row["content_hash"],
        size_bytes=row["size_bytes"],
        pages=row["pages"],
        chunks=row["chunk_count"],
        embedder=row["embedder"],
        ingested_at=from_epoch_us(row["ingested_at_us"]),
    )


def _select_documents(
    connection: sqlite3.Connection, clause: str, values: Sequence[object], limit: int
) -> list[DocumentInfo]:
    query = (
        f"SELECT {_DOCUMENT_COLUMNS} FROM documents {clause}"  # noqa: S608 - fixed SQL, bound values
        " ORDER BY ingested_at_us DESC, rowid DESC LIMIT ?"
    )
    return [_document_info(row) for row in connection.execute(query, [*values, limit])]


def _select_labels(connection: sqlite3.Connection) -> dict[str, DocumentLabels]:
    return {
        row["id"]: DocumentLabels(
            source=row["source"],
            source_kind=SourceKind(row["source_kind"]),
            collection=row["collection"],
            project=row["project"],
        )
        for row in connection.execute(
            "SELECT id, source, source_kind, collection, project FROM documents"
        )
    }


def _select_chunk_ids(connection: sqlite3.Connection) -> dict[str, list[int]]:
    chunk_ids: defaultdict[str, list[int]] = defaultdict(list)
    for document_id, chunk_id in connection.execute(
        "SELECT document_id, id FROM chunks ORDER BY document_id, ordinal"
    ):
        chunk_ids[document_id].append(chunk_id)
    return dict(chunk_ids)


def _vector_blob(vector: npt.NDArray[np.float32]) -> bytes:
    return vector.astype(VECTOR_DTYPE, copy=False).tobytes()


def _write_document(
    connection: sqlite3.Connection,
    document: NewDocument,
    chunks: Sequence[ChunkDraft],
    vectors: npt.NDArray[np.float32],
    replacing: str | None,
) -> tuple[DocumentInfo, list[int], list[int]]:
    document_id = replacing or new_document_id()
    row = {
        "id": document_id,
        "source": document.source,
        "source_kind": document.source_kind.value,
        "title": document.title,
        "collection": document.collection,
        "project": document.project,
        "media_type": document.media_type,
        "content_hash": document.content_hash,
        "size_bytes": document.size_bytes,
        "pages": document.pages,
        "embedder": document.embedder,
        "ingested_at_us": to_epoch_us(document.ingested_at),
    }
    heading_of = {chunk.section: heading_text(document.title, chunk.section) for chunk in chunks}
    with transaction(connection):
        removed = []
        if replacing is None:
            connection.execute(_INSERT_DOCUMENT, row)
        else:
            removed = _remove_chunks(connection, document_id)
            connection.execute(_UPDATE_DOCUMENT, row)
        connection.executemany(
            _INSERT_CHUNK,
            (
                (
                    document_id,
                    chunk.ordinal,
                    chunk.text,
                    chunk.page,
                    json.dumps(chunk.section),
                    chunk.tokens,
                )
                for chunk in chunks
            ),
        )
        ids = [
            chunk_id
            for (chunk_id,) in connection.execute(
                "SELECT id FROM chunks WHERE document_id = ? ORDER BY ordinal", (document_id,)
            )
        ]
        connection.executemany(
            "INSERT INTO chunks_fts (rowid, text, heading) VALUES (?, ?, ?)",
            (
                (chunk_id, chunk.text, heading_of[chunk.section])
                for chunk_id, chunk in zip(ids, chunks, strict=True)
            ),
        )
        dim = vectors.shape[1]
        connection.executemany(
            _UPSERT_VECTOR,
            (
                (chunk_id, document.embedder, dim, _vector_blob(vector))
                for chunk_id, vector in zip(ids, vectors, strict=True)
            ),
        )
        stored = _select_documents(connection, "WHERE documents.id = ?", [document_id], 1)[0]
    return stored, ids, removed


def _remove_chunks(connection: sqlite3.Connection, document_id: str) -> list[int]:
    """Delete a document's chunks with their FTS rows and vectors; return their ids."""
    ids = [
        chunk_id
        for (chunk_id,) in connection.execute(
            "SELECT id FROM chunks WHERE document_id = ?", (document_id,)
        )
    ]
    # FTS5 tables take no foreign keys: their rows go by hand.
    connection.executemany("DELETE FROM chunks_fts WHERE rowid = ?", ((i,) for i in ids))
    connection.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
    return ids


def _delete_document(connection: sqlite3.Connection, document_id: str) -> list[int]:
    with transaction(connection):
        removed = _remove_chunks(connection, document_id)
        connection.execute("DELETE FROM documents WHERE id = ?", (document_id,))
    return removed


def _select_vectors(
    connection: sqlite3.Connection, embedder: str, dim: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    rows = connection.execute(
        "SELECT chunk_id, vector FROM vectors WHERE embedder = ? AND dim = ? ORDER BY chunk_id",
        (embedder, dim),
    ).fetchall()
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=VECTOR_DTYPE)
    return ids, matrix.reshape(len(rows), dim).astype(np.float32)


def _select_stale(
    connection: sqlite3.Connection, embedder: str, dim: int, limit: int
) -> list[StaleChunk]:
    rows = connection.execute(
        f"SELECT chunks.id, chunks.text, chunks.section, documents.title {_STALE_CHUNKS}"
        " ORDER BY chunks.id LIMIT ?",
        (embedder, dim, limit),
    )
    return [
        StaleChunk(
            id=row["id"],
            title=row["title"],
            section=tuple(json.loads(row["section"])),
            text=row["text"],
        )
        for row in rows
    ]


def _write_vectors(
    connection: sqlite3.Connection,
    ids: Sequence[int],
    vectors: npt.NDArray[np.float32],
    embedder: str,
) -> list[int]:
    dim = vectors.shape[1]
    with transaction(connection):
        placeholders = ", ".join("?" * len(ids))
        existing = {
            row[0]
            for row in connection.execute(
                f"SELECT id FROM chunks WHERE id IN ({placeholders})",  # noqa: S608 - placeholders only
                list(ids),
            )
        }
        rows = [
            (chunk_id, embedder, dim, _vector_blob(vector))
            for chunk_id, vector in zip(ids, vectors, strict=True)
            if chunk_id in existing
        ]
        connection.executemany(_UPSERT_VECTOR, rows)
    return [row[0] for row in rows]


def _finish_reembedding(connection: sqlite3.Connection, embedder: str) -> None:
    with transaction(connection):
        connection.execute("UPDATE documents SET embedder = ? WHERE embedder != ?", (embedder,) * 2)
        _upsert_meta(connection, EMBEDDER_KEY, embedder)


def _keyword_search(
    connection: sqlite3.Connection, expression: str, where: DocumentFilter, limit: int
) -> list[tuple[int, float]]:
    conditions, values = where.sql()
    if conditions:
        query = (
            "SELECT chunks_fts.rowid, bm25(chunks_fts) AS score FROM chunks_fts"  # noqa: S608 - fixed SQL, bound values
            " JOIN chunks ON chunks.id = chunks_fts.rowid"
            " JOIN documents ON documents.id = chunks.document_id"
            f" WHERE chunks_fts MATCH ? AND {conditions} ORDER BY score LIMIT ?"
        )
    else:
        # `rank` lets FTS5 keep only the best `limit` while it scores.
        query = "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?"
    rows = connection.execute(query, [expression, *values, limit])
    return [(int(chunk_id), float(score)) for chunk_id, score in rows]


def _select_chunks(connection: sqlite3.Connection, ids: Sequence[int]) -> dict[int, ChunkRow]:
    if not ids:
        return {}
    placeholders = ", ".join("?" * len(ids))
    rows = connection.execute(
        f"SELECT {_HIT_COLUMNS} FROM chunks"  # noqa: S608 - placeholders only
        f" JOIN documents ON documents.id = chunks.document_id WHERE chunks.id IN ({placeholders})",
        list(ids),
    )
    return {
        row["chunk_id"]: ChunkRow(
            chunk_id=row["chunk_id"],
            document_id=row["document_id"],
            text=row["text"],
            page=row["page"],
            section=tuple(json.loads(row["section"])),
            source=row["source"],
            source_kind=SourceKind(row["source_kind"]),
            title=row["title"],
            collection=row["collection"],
            project=row["project"],
        )
        for row in rows
    }


def _select_counts(connection: sqlite3.Connection) -> KnowledgeCounts:
    note = SourceKind.NOTE.value
    documents, chunks = connection.execute(
        "SELECT (SELECT COUNT(*) FROM documents WHERE source_kind != ?),"
        " (SELECT COUNT(*) FROM chunks JOIN documents ON documents.id = chunks.document_id"
        " WHERE documents.source_kind != ?)",
        (note, note),
    ).fetchone()
    newest = connection.execute(
        "SELECT ingested_at_us, title FROM documents WHERE source_kind != ?"
        " ORDER BY ingested_at_us DESC, rowid DESC LIMIT 1",
        (note,),
    ).fetchone()
    return KnowledgeCounts(
        documents=documents,
        chunks=chunks,
        last_ingest_at=None if newest is None else from_epoch_us(newest["ingested_at_us"]),
        last_ingest_title=None if newest is None else newest["title"],
    )
