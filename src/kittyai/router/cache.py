"""The router's answer cache: exact repeats, then paraphrases of general questions.

Tier 1 of routing. An exact hit is a conversation seen before, up to case and
whitespace. A semantic hit is a lone general question whose MiniLM embedding is
close enough to one answered before ("how do I dry PETG filament?" and "what's
the best way to dry petg filament"). `cache_policy` keeps out what must always
reach a model: tool turns, questions about the home's current state and fresh
facts; and the semantic tier only answers a conversation's first question.

Entries live in SQLite so a restart keeps them, and in memory for lookups: a
dict by exact key, and per scope one matrix of unit vectors, so a semantic
lookup is a single matrix-vector product. sqlite3 blocks, so its one connection
lives on one worker thread; the event loop only awaits its jobs.
"""

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
import hashlib
import json
from pathlib import Path
import re
import sqlite3
from typing import Any, Literal, Self

import numpy as np

from kittyai.contract.routing import TokenUsage
from kittyai.embedding import Embedder
from kittyai.router.backends.base import BackendReply, Message
from kittyai.router.classify import cache_policy, message_text
from kittyai.router.options import CacheOptions
from kittyai.sqlite import SqliteDatabase

# Longer questions are pasted logs or documents: the embedding sees only their
# first 256 word pieces, so two different pastes could look alike.
MAX_SEMANTIC_CHARS = 500
# Questions embedded lately: `store` after a missed `lookup` needs the same vector.
_RECENT_VECTORS = 64
_INITIAL_ROWS = 64

# Migration N brings the schema from `PRAGMA user_version` N-1 to N; append, never edit.
_MIGRATIONS = (
    """
    CREATE TABLE entries (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        exact_key TEXT NOT NULL UNIQUE,
        question TEXT NOT NULL,
        -- float32 little-endian unit vector; NULL when only exact repeats may hit.
        vector BLOB,
        embedder TEXT,
        reply TEXT NOT NULL,
        backend TEXT NOT NULL,
        -- UTC, in whole microseconds since the epoch.
        created_us INTEGER NOT NULL,
        hits INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX entries_by_age ON entries (created_us);
    """,
)
# A new answer to a conversation replaces the old row and gets a new id, so a
# pending delete of the old entry (evicted meanwhile) cannot remove the new one.
_REPLACE = (
    "INSERT OR REPLACE INTO entries (scope, exact_key, question, vector, embedder, reply,"
    " backend, created_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_SELECT = (
    "SELECT id, scope, exact_key, question, vector, embedder, reply, backend, created_us"
    " FROM entries ORDER BY created_us, id"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SPACES = re.compile(r"\s+")
# Numbers as written: 0.4, 3/8, 65, 2,5 (the 6 of M6).
_NUMBERS = re.compile(r"\d+(?:[.,/:]\d+)*")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CacheHit:
    """An answer served from the cache, and how closely its question matched."""

    reply: BackendReply
    kind: Literal["exact", "semantic"]
    # 1.0 for an exact hit; the cosine similarity of the questions for a semantic one.
    similarity: float
    backend: str
    stored_at: datetime


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One cached answer."""

    id: int
    scope: str
    exact_key: str
    question: str
    reply: BackendReply
    backend: str
    stored_at: datetime


class _ScopeIndex:
    """The unit vectors of one scope's entries, as rows of one matrix.

    Rows are appended into spare capacity and removed by moving the last row
    into the gap, so both cost O(dim) and the live rows stay contiguous.
    """

    def __init__(self, dim: int) -> None:
        self._vectors = np.empty((_INITIAL_ROWS, dim), dtype=np.float32)
        self._stored_s = np.empty(_INITIAL_ROWS, dtype=np.float64)
        self._entries: list[CacheEntry] = []
        self._rows: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: CacheEntry, vector: np.ndarray) -> None:
        row = len(self._entries)
        if row == len(self._vectors):
            self._vectors = np.concatenate([self._vectors, np.empty_like(self._vectors)])
            self._stored_s = np.concatenate([self._stored_s, np.empty_like(self._stored_s)])
        self._vectors[row] = vector
        self._stored_s[row] = entry.stored_at.timestamp()
        self._entries.append(entry)
        self._rows[entry.id] = row

    def remove(self, entry_id: int) -> None:
        row = self._rows.pop(entry_id, None)
        if row is None:
            return
        last = len(self._entries) - 1
        if row != last:
            moved = self._entries[last]
            self._vectors[row] = self._vectors[last]
            self._stored_s[row] = self._stored_s[last]
            self._entries[row] = moved
            self._rows[moved.id] = row
        self._entries.pop()

    def best(self, vector: np.ndarray, not_before_s: float) -> tuple[CacheEntry, float] | None:
        """Return the entry stored since `not_before_s` whose vector is closest to `vector`."""
        size = len(self._entries)
        if not size:
            return None
        # Unit vectors: the dot product is the cosine similarity.
        similarities = self._vectors[:size] @ vector
        similarities[self._stored_s[:size] < not_before_s] = -np.inf
        row = int(np.argmax(similarities))
        return self._entries[row], float(similarities[row])


class AnswerCache:
    """Answers worth serving again, found by exact conversation or by paraphrase."""

    def __init__(
        self,
        database: SqliteDatabase,
        options: CacheOptions,
        embedder: Embedder | None,
        clock: Callable[[], datetime],
    ) -> None:
        """Keep the entries in `database`; use `open` instead."""
        self._database = database
        self._options = options
        self._embedder = embedder
        self._clock = clock
        self._ttl = timedelta(hours=options.ttl_hours)
        # Every entry, oldest first: eviction and expiry take from the front.
        self._by_age: OrderedDict[int, CacheEntry] = OrderedDict()
        self._by_key: dict[str, CacheEntry] = {}
        self._scopes: dict[str, _ScopeIndex] = {}
        self._recent_vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    @classmethod
    async def open(
        cls,
        path: Path,
        options: CacheOptions,
        embedder: Embedder | None,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> Self:
        """Open the cache at `path` and load its live entries; no embedder: exact only.

        Vectors made by another embedding model than `embedder` are not used, so
        their entries only serve exact repeats.
        """
        database = await SqliteDatabase.open(path, _MIGRATIONS, name="cache")
        cache = cls(database, options, embedder, clock)
        try:
            rows = await cache._database.run(_read_all, _to_us(clock() - cache._ttl))
            for row in rows:
                cache._load(row)
            # The limit may have been lowered since the entries were written.
            await cache._delete(cache._take_victims())
        except BaseException:
            await cache.close()
            raise
        return cache

    def __len__(self) -> int:
        """Return the number of entries held."""
        return len(self._by_age)

    async def close(self) -> None:
        """Finish the jobs already asked for, then close the database."""
        await self._database.close()

    async def lookup(self, scope: str, messages: list[Message]) -> CacheHit | None:
        """Return a cached answer to `messages` in `scope`, or None.

        Conversations `cache_policy` keeps out are never answered from the cache.
        """
        policy = cache_policy(messages)
        if not policy.exact:
            return None
        now = self._clock()
        entry = self._by_key.get(exact_key(scope, messages))
        if entry is not None and not self._expired(entry, now):
            await self._count_hit(entry)
            return _hit(entry, "exact", 1.0)
        question = _question(messages)
        if not self._semantic(policy.semantic, question) or not self._scopes.get(scope):
            return None
        found = self.find_similar(scope, await self._vector(question))
        if found is None:
            return None
        entry, similarity = found
        # MiniLM barely sees numbers: "layer height for a 0.4 nozzle?" and "... 0.6
        # nozzle?" score 0.95, as do M6 and M8 taps. Different numbers, different answer.
        if _NUMBERS.findall(entry.question) != _NUMBERS.findall(question):
            return None
        await self._count_hit(entry)
        return _hit(entry, "semantic", similarity)

    def find_similar(self, scope: str, vector: np.ndarray) -> tuple[CacheEntry, float] | None:
        """Return the unexpired entry of `scope` closest to `vector`, if close enough.

        `vector` is a unit vector from this cache's embedder; close enough is a
        cosine similarity of at least `options.similarity`.
        """
        index = self._scopes.get(scope)
        if index is None:
            return None
        not_before = (self._clock() - self._ttl).timestamp()
        found = index.best(vector, not_before)
        if found is None or found[1] < self._options.similarity:
            return None
        return found

    async def store(
        self, scope: str, messages: list[Message], reply: BackendReply, *, backend: str
    ) -> None:
        """Keep `reply` to `messages` for later, if it may be served again.

        Tool turns, live state, fresh facts, tool calls and empty answers are not kept.
        """
        policy = cache_policy(messages)
        if not policy.exact or reply.tool_calls or not reply.content.strip():
            return
        question = _question(messages)
        vector = None
        if self._semantic(policy.semantic, question):
            vector = await self._vector(question)
        stored_at = self._clock()
        # Log-probabilities only mean something for the call that made them.
        reply = replace(reply, logprobs=None)
        key = exact_key(scope, messages)
        row = (
            scope,
            key,
            question,
            None if vector is None else vector.astype("<f4").tobytes(),
            None if vector is None else self._embedder_id,
            json.dumps(_reply_to_json(reply), ensure_ascii=False),
            backend,
            _to_us(stored_at),
        )
        entry_id = await self._database.run(_replace, row)
        entry = CacheEntry(entry_id, scope, key, question, reply, backend, stored_at)
        self._add(entry, vector)
        await self._delete(self._take_victims())

    @property
    def _embedder_id(self) -> str | None:
        return None if self._embedder is None else self._embedder.id

    def _semantic(self, allowed: bool, question: str) -> bool:
        return (
            allowed
            and self._options.semantic
            and self._embedder is not None
            and 0 < len(question) <= MAX_SEMANTIC_CHARS
        )

    async def _vector(self, question: str) -> np.ndarray:
        assert self._embedder is not None  # noqa: S101 - callers check `_semantic`
        vector = self._recent_vectors.get(question)
        if vector is None:
            vector = (await self._embedder.embed([question]))[0]
            self._recent_vectors[question] = vector
            if len(self._recent_vectors) > _RECENT_VECTORS:
                self._recent_vectors.popitem(last=False)
        else:
            self._recent_vectors.move_to_end(question)
        return vector

    def _expired(self, entry: CacheEntry, now: datetime) -> bool:
        return entry.stored_at < now - self._ttl

    def _load(self, row: tuple[Any, ...]) -> None:
        entry_id, scope, key, question, blob, embedder_id, reply, backend, created_us = row
        vector = None
        if (
            blob is not None
            and self._embedder is not None
            and embedder_id == self._embedder.id
            and len(blob) == self._embedder.dim * 4
        ):
            vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        stored_at = _EPOCH + timedelta(microseconds=created_us)
        entry = CacheEntry(
            entry_id, scope, key, question, _reply_from_json(json.loads(reply)), backend, stored_at
        )
        self._add(entry, vector)

    def _add(self, entry: CacheEntry, vector: np.ndarray | None) -> None:
        # A new answer to the same conversation replaces the old one.
        if (previous := self._by_key.get(entry.exact_key)) is not None:
            self._forget(previous)
        self._by_age[entry.id] = entry
        self._by_key[entry.exact_key] = entry
        if vector is not None and self._embedder is not None:
            index = self._scopes.get(entry.scope)
            if index is None:
                index = self._scopes[entry.scope] = _ScopeIndex(self._embedder.dim)
            index.add(entry, vector)

    def _forget(self, entry: CacheEntry) -> None:
        self._by_age.pop(entry.id, None)
        if self._by_key.get(entry.exact_key) is entry:
            del self._by_key[entry.exact_key]
        if (index := self._scopes.get(entry.scope)) is not None:
            index.remove(entry.id)
            if not index:
                del self._scopes[entry.scope]

    def _take_victims(self) -> list[int]:
        """Forget the expired entries and the oldest beyond the limit; return their ids."""
        victims = []
        not_before = self._clock() - self._ttl
        while self._by_age:
            oldest = next(iter(self._by_age.values()))
            if len(self._by_age) <= self._options.max_entries and oldest.stored_at >= not_before:
                break
            self._forget(oldest)
            victims.append(oldest.id)
        return victims

    async def _delete(self, entry_ids: Sequence[int]) -> None:
        if entry_ids:
            await self._database.run(_delete_rows, entry_ids)

    async def _count_hit(self, entry: CacheEntry) -> None:
        await self._database.run(_count_hit, entry.id)


def exact_key(scope: str, messages: list[Message]) -> str:
    """Return the key of a conversation: its scope and its turns, case and spacing folded.

    System messages are left out: their stable part is in the scope, and Home
    Assistant's carry the current time.
    """
    turns = [
        [message.get("role"), _fold(message_text(message))]
        for message in messages
        if message.get("role") != "system"
    ]
    payload = json.dumps([scope, turns], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _fold(text: str) -> str:
    return _SPACES.sub(" ", text).strip().casefold()


def _question(messages: list[Message]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message).strip()
    return ""


def _hit(entry: CacheEntry, kind: Literal["exact", "semantic"], similarity: float) -> CacheHit:
    # Served from the cache, the answer used no tokens this time.
    reply = replace(entry.reply, usage=TokenUsage())
    return CacheHit(reply, kind, similarity, entry.backend, entry.stored_at)


def _reply_to_json(reply: BackendReply) -> dict[str, Any]:
    return {
        "content": reply.content,
        "finish_reason": reply.finish_reason,
        "model": reply.model,
        "usage": reply.usage.model_dump(),
        "citations": list(reply.citations),
    }


def _reply_from_json(data: dict[str, Any]) -> BackendReply:
    return BackendReply(
        content=data["content"],
        finish_reason=data["finish_reason"],
        model=data["model"],
        usage=TokenUsage.model_validate(data["usage"]),
        citations=tuple(data["citations"]),
    )


def _to_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _read_all(connection: sqlite3.Connection, not_before_us: int) -> list[tuple[Any, ...]]:
    connection.execute("DELETE FROM entries WHERE created_us < ?", (not_before_us,))
    return connection.execute(_SELECT).fetchall()


def _replace(connection: sqlite3.Connection, row: tuple[Any, ...]) -> int:
    return int(connection.execute(_REPLACE, row).fetchone()[0])


def _delete_rows(connection: sqlite3.Connection, entry_ids: Sequence[int]) -> None:
    connection.execute(
        "DELETE FROM entries WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(entry_ids)),),
    )


def _count_hit(connection: sqlite3.Connection, entry_id: int) -> None:
    connection.execute("UPDATE entries SET hits = hits + 1 WHERE id = ?", (entry_id,))
