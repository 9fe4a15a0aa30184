"""The router's decision log: every routed turn, durably, and what it cost.

One SQLite file holds one row per `RoutingDecision`: the columns the log is filtered
and summed by, and the whole decision as JSON. The ledger is the only record of
spending, so budgets and statistics are derived from it and survive restarts.

sqlite3 is blocking and its connections belong to the thread that made them, so
the ledger keeps one connection on one dedicated worker thread and the event loop
only awaits its jobs.
"""

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
import sqlite3
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from kittyai.contract.routing import RouteReason, RoutingDecision, Tier
from kittyai.sqlite import SqliteDatabase

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

# Migration N brings the schema from `PRAGMA user_version` N-1 to N; append, never edit.
_MIGRATIONS = (
    """
    CREATE TABLE decisions (
        id TEXT PRIMARY KEY,
        -- UTC, in whole microseconds since the epoch: exact, and ordered like time.
        at_us INTEGER NOT NULL,
        tier TEXT NOT NULL,
        backend TEXT,
        reason TEXT NOT NULL,
        profile TEXT NOT NULL,
        conversation_id TEXT,
        correlation_id TEXT,
        cost_usd REAL NOT NULL,
        confidence REAL,
        latency_ms REAL NOT NULL,
        cache_hit INTEGER NOT NULL,
        decision TEXT NOT NULL
    ) STRICT;
    -- Newest-first pages walk (at_us, id); backend and cost make it cover the part of
    -- `spent()` that sums single turns.
    CREATE INDEX decisions_by_time ON decisions (at_us, id, backend, cost_usd);
    -- What was spent per UTC day and backend ('' for none), kept by the trigger in the
    -- statement that records the turn: budgets sum a month from a few dozen rows.
    CREATE TABLE daily_spend (
        day INTEGER NOT NULL,
        backend TEXT NOT NULL,
        cost_usd REAL NOT NULL,
        PRIMARY KEY (day, backend)
    ) STRICT, WITHOUT ROWID;
    CREATE TRIGGER decisions_spend AFTER INSERT ON decisions WHEN NEW.cost_usd > 0
    BEGIN
        INSERT INTO daily_spend (day, backend, cost_usd)
        VALUES (NEW.at_us / 86400000000, coalesce(NEW.backend, ''), NEW.cost_usd)
        ON CONFLICT (day, backend) DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd;
    END;
    """,
)
_INSERT = (
    "INSERT INTO decisions (id, at_us, tier, backend, reason, profile, conversation_id,"
    " correlation_id, cost_usd, confidence, latency_ms, cache_hit, decision)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_DAY_US = 86_400_000_000


class LogQuery(BaseModel):
    """Which decisions to list: filters, a page size and where the last page ended.

    Times without a zone are taken as UTC; `since` is inclusive, `until` exclusive.
    """

    model_config = ConfigDict(extra="forbid")

    tier: Tier | None = None
    backend: str | None = None
    reason: RouteReason | None = None
    profile: str | None = None
    conversation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = Field(default=None, description="`next_cursor` of the previous page.")


class LogPage(BaseModel):
    """One page of decisions, newest first."""

    model_config = ConfigDict(extra="forbid")

    items: list[RoutingDecision]
    next_cursor: str | None = Field(default=None, description="None on the last page.")


@dataclass(frozen=True, slots=True)
class DecisionSummary:
    """The part of a decision the statistics need, without parsing the whole."""

    at: datetime
    tier: Tier
    backend: str | None
    reason: RouteReason
    latency_ms: float
    cache_hit: bool


class DecisionLedger:
    """The durable log of routing decisions and the ledger of their costs."""

    def __init__(self, database: SqliteDatabase) -> None:
        """Keep the log in `database`; use `open` instead."""
        self._database = database

    @classmethod
    async def open(cls, path: Path) -> Self:
        """Open the ledger at `path`, creating or migrating its schema."""
        return cls(await SqliteDatabase.open(path, _MIGRATIONS, name="ledger"))

    async def close(self) -> None:
        """Finish the jobs already asked for, then close the database."""
        await self._database.close()

    async def record(self, decision: RoutingDecision) -> None:
        """Store `decision`; it is committed to disk when this returns."""
        await self._database.run(_insert, decision)

    async def get(self, decision_id: str) -> RoutingDecision | None:
        """Return the decision with `decision_id`, or None when there is none."""
        return await self._database.run(_select_one, decision_id)

    async def query(self, query: LogQuery) -> LogPage:
        """Return one page of the decisions `query` selects, newest first.

        Raise `ValueError` when `query.cursor` is not one this ledger handed out.
        """
        after = _decode_cursor(query.cursor) if query.cursor is not None else None
        return await self._database.run(_select_page, query, after)

    async def spent(self, *, since: datetime, backend: str | None = None) -> float:
        """Return the USD spent since `since`, on `backend` or on all backends."""
        return await self._database.run(_sum_cost, _epoch_us(since), backend)

    async def window(self, *, since: datetime) -> list[DecisionSummary]:
        """Return summaries of the decisions since `since`, newest first."""
        return await self._database.run(_select_summaries, _epoch_us(since))

    async def recent_scores(self, limit: int) -> list[float]:
        """Return the confidence of the newest `limit` decisions that were scored."""
        return await self._database.run(_select_scores, limit)


def _insert(connection: sqlite3.Connection, decision: RoutingDecision) -> None:
    connection.execute(
        _INSERT,
        (
            decision.id,
            _epoch_us(decision.at),
            decision.tier.value,
            decision.backend,
            decision.reason.value,
            decision.profile,
            decision.conversation_id,
            decision.correlation_id,
            decision.cost_usd,
            decision.confidence,
            decision.latency_ms,
            decision.cache_hit,
            decision.model_dump_json(),
        ),
    )


def _select_one(connection: sqlite3.Connection, decision_id: str) -> RoutingDecision | None:
    row = connection.execute(
        "SELECT decision FROM decisions WHERE id = ?", (decision_id,)
    ).fetchone()
    return RoutingDecision.model_validate_json(row[0]) if row else None


def _select_page(
    connection: sqlite3.Connection, query: LogQuery, after: tuple[int, str] | None
) -> LogPage:
    clauses: list[str] = []
    values: list[object] = []
    for column, value in (
        ("tier", query.tier),
        ("backend", query.backend),
        ("reason", query.reason),
        ("profile", query.profile),
        ("conversation_id", query.conversation_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            values.append(value)
    if query.since is not None:
        clauses.append("at_us >= ?")
        values.append(_epoch_us(query.since))
    if query.until is not None:
        clauses.append("at_us < ?")
        values.append(_epoch_us(query.until))
    if after is not None:
        clauses.append("(at_us, id) < (?, ?)")
        values.extend(after)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    # One row more than the page tells whether another page follows.
    rows = connection.execute(
        f"SELECT at_us, id, decision FROM decisions {where}"  # noqa: S608 - fixed columns, bound values
        " ORDER BY at_us DESC, id DESC LIMIT ?",
        (*values, query.limit + 1),
    ).fetchall()
    page = rows[: query.limit]
    more = len(rows) > query.limit
    return LogPage(
        items=[RoutingDecision.model_validate_json(decision) for _, _, decision in page],
        next_cursor=_encode_cursor(page[-1][0], page[-1][1]) if more else None,
    )


def _sum_cost(connection: sqlite3.Connection, since_us: int, backend: str | None) -> float:
    # Whole days from the daily totals; the rest of the day `since` falls in from its turns.
    first_whole_day = -(-since_us // _DAY_US)
    (spent,) = connection.execute(
        """
        SELECT
            (SELECT total(cost_usd) FROM decisions
             WHERE at_us >= :since AND at_us < :first_whole_day * :day_us
             AND (:backend IS NULL OR backend = :backend))
          + (SELECT total(cost_usd) FROM daily_spend
             WHERE day >= :first_whole_day AND (:backend IS NULL OR backend = :backend))
        """,
        {
            "since": since_us,
            "first_whole_day": first_whole_day,
            "day_us": _DAY_US,
            "backend": backend,
        },
    ).fetchone()
    return float(spent)


def _select_summaries(connection: sqlite3.Connection, since_us: int) -> list[DecisionSummary]:
    rows = connection.execute(
        "SELECT at_us, tier, backend, reason, latency_ms, cache_hit FROM decisions"
        " WHERE at_us >= ? ORDER BY at_us DESC, id DESC",
        (since_us,),
    )
    return [
        DecisionSummary(
            at=_from_epoch_us(at_us),
            tier=Tier(tier),
            backend=backend,
            reason=RouteReason(reason),
            latency_ms=latency_ms,
            cache_hit=bool(cache_hit),
        )
        for at_us, tier, backend, reason, latency_ms, cache_hit in rows
    ]


def _select_scores(connection: sqlite3.Connection, limit: int) -> list[float]:
    rows = connection.execute(
        "SELECT confidence FROM decisions WHERE confidence IS NOT NULL"
        " ORDER BY at_us DESC, id DESC LIMIT ?",
        (limit,),
    )
    return [confidence for (confidence,) in rows]


def _epoch_us(moment: datetime) -> int:
    """Return `moment` in microseconds since the epoch; a naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def _from_epoch_us(epoch_us: int) -> datetime:
    return _EPOCH + epoch_us * _MICROSECOND


def _encode_cursor(at_us: int, decision_id: str) -> str:
    """Return a cursor for the page after the decision at (`at_us`, `decision_id`)."""
    return base64.urlsafe_b64encode(f"{at_us}:{decision_id}".encode()).rstrip(b"=").decode()


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, separator, decision_id = raw.partition(":")
        at_us = int(at_text)
    except ValueError as err:
        raise ValueError("malformed cursor") from err
    if not separator or not decision_id:
        raise ValueError("malformed cursor")
    return at_us, decision_id
