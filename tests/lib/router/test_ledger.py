"""The decision ledger: a durable, filterable, paginated log of every routed turn."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
import signal
import sqlite3
import sys

from pydantic import ValidationError
import pytest

from kittyai.contract.routing import Attempt, RouteReason, RoutingDecision, Tier, TokenUsage
from kittyai.router.ledger import DecisionLedger, DecisionSummary, LogQuery
from tests.lib.router.decisions import NOW, make_decision


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[DecisionLedger]:
    ledger = await DecisionLedger.open(tmp_path / "decisions.sqlite3")
    yield ledger
    await ledger.close()


async def all_pages(ledger: DecisionLedger, **filters: object) -> list[list[str]]:
    """Walk every page of a query; return the ids of each page."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await ledger.query(LogQuery.model_validate({**filters, "cursor": cursor}))
        pages.append([item.id for item in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def full_decision() -> RoutingDecision:
    """A cloud turn with every field set to something other than its default."""
    return RoutingDecision(
        id="turn-0001",
        at=datetime(2026, 3, 15, 14, 30, 5, 123456, tzinfo=UTC),
        correlation_id="corr-7",
        conversation_id="conv-3",
        profile="kitty-auto",
        tier=Tier.CLOUD,
        backend="anthropic",
        model="claude-sonnet",
        reason=RouteReason.LOW_CONFIDENCE,
        confidence=0.41,
        threshold=0.55,
        scores={"low_token_prob": 0.38, "margin": 0.62},
        usage=TokenUsage(input=1200, cache_read=300, cache_write=40, output=250, reasoning=90),
        cost_usd=0.004617,
        latency_ms=1834.5,
        ttft_ms=412.25,
        stages_ms={"cache": 1.5, "local": 611.0, "cloud": 1210.0},
        cache_hit=False,
        cache_similarity=0.87,
        budget_blocked=True,
        notice="Heads up.",
        attempts=[
            Attempt(backend="ollama", model="qwen3", outcome="low_confidence", latency_ms=611.0),
            Attempt(
                backend="openai",
                model="gpt-5-mini",
                outcome="error",
                status=529,
                error="overloaded",
                latency_ms=80.0,
            ),
            Attempt(backend="anthropic", model="claude-sonnet", outcome="ok", latency_ms=1130.0),
        ],
    )


async def test_a_recorded_decision_comes_back_whole(ledger: DecisionLedger) -> None:
    decision = full_decision()
    await ledger.record(decision)

    assert await ledger.get("turn-0001") == decision
    page = await ledger.query(LogQuery())
    assert page.items == [decision]
    assert page.next_cursor is None
    assert await ledger.get("no-such-turn") is None


async def test_filters_select_matching_decisions(ledger: DecisionLedger) -> None:
    local = make_decision(Tier.LOCAL, at=NOW - timedelta(hours=3), conversation_id="kitchen")
    cloud = make_decision(Tier.CLOUD, at=NOW - timedelta(hours=2), profile="kitty-cloud")
    search = make_decision(Tier.SEARCH, at=NOW - timedelta(hours=1), conversation_id="kitchen")
    intent = make_decision(Tier.INTENT, at=NOW)
    for decision in (local, cloud, search, intent):
        await ledger.record(decision)

    async def ids(**filters: object) -> list[str]:
        return [item.id for item in (await ledger.query(LogQuery.model_validate(filters))).items]

    assert await ids() == [intent.id, search.id, cloud.id, local.id]
    assert await ids(tier="cloud") == [cloud.id]
    assert await ids(backend="perplexity") == [search.id]
    assert await ids(reason="intent_match") == [intent.id]
    assert await ids(profile="kitty-cloud") == [cloud.id]
    assert await ids(conversation_id="kitchen") == [search.id, local.id]
    assert await ids(conversation_id="kitchen", tier="local") == [local.id]
    # `since` is inclusive, `until` exclusive.
    assert await ids(since=cloud.at, until=intent.at) == [search.id, cloud.id]
    # A time in another zone means the same instant.
    assert await ids(since=cloud.at.astimezone(timezone(timedelta(hours=-5)))) == [
        intent.id,
        search.id,
        cloud.id,
    ]
    assert await ids(tier="cache") == []


async def test_pages_cover_every_decision_once(ledger: DecisionLedger) -> None:
    # Several decisions share a timestamp, so the pages must break ties on the id.
    decisions = [
        make_decision(Tier.CLOUD if n % 3 == 0 else Tier.LOCAL, at=NOW - timedelta(seconds=n // 4))
        for n in range(23)
    ]
    await asyncio.gather(*(ledger.record(decision) for decision in decisions))
    newest_first = [
        decision.id for decision in sorted(decisions, key=lambda d: (d.at, d.id), reverse=True)
    ]

    pages = await all_pages(ledger, limit=5)
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert [decision_id for page in pages for decision_id in page] == newest_first

    cloud_ids = [d.id for d in decisions if d.tier is Tier.CLOUD]
    cloud_pages = await all_pages(ledger, tier="cloud", limit=2)
    assert [len(page) for page in cloud_pages] == [2, 2, 2, 2]
    assert sorted(i for page in cloud_pages for i in page) == sorted(cloud_ids)

    # A page exactly as long as what is left has no next page.
    assert await all_pages(ledger, tier="cloud", limit=8) == [
        [i for i in newest_first if i in cloud_ids]
    ]


@pytest.mark.parametrize("cursor", ["", "%%%", "bm90LWEtY3Vyc29y", "MTIzOg", "eHl6OmFi", "w7w"])
async def test_a_malformed_cursor_is_refused(ledger: DecisionLedger, cursor: str) -> None:
    await ledger.record(make_decision())

    with pytest.raises(ValueError, match="malformed cursor"):
        await ledger.query(LogQuery(cursor=cursor))


def test_the_log_query_reads_http_query_strings() -> None:
    query = LogQuery.model_validate(
        {"tier": "search", "since": "2026-03-14T00:00:00Z", "limit": "20", "reason": "freshness"}
    )

    assert query.tier is Tier.SEARCH
    assert query.reason is RouteReason.FRESHNESS
    assert query.since == datetime(2026, 3, 14, tzinfo=UTC)
    assert query.limit == 20
    assert LogQuery().limit == 50
    for bad in ({"limit": "0"}, {"limit": "501"}, {"tier": "moon"}, {"colour": "red"}):
        with pytest.raises(ValidationError):
            LogQuery.model_validate(bad)


RECORD_THEN_HANG = """
import asyncio, sys
from pathlib import Path
from kittyai.contract.routing import RoutingDecision
from kittyai.router.ledger import DecisionLedger

async def main():
    ledger = await DecisionLedger.open(Path(sys.argv[1]))
    for line in sys.stdin:
        await ledger.record(RoutingDecision.model_validate_json(line))
    print("recorded", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_recorded_decisions_survive_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "decisions.sqlite3"
    decisions = [make_decision(Tier.CLOUD, cost_usd=0.01 * n) for n in range(1, 6)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RECORD_THEN_HANG,
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write("".join(d.model_dump_json() + "\n" for d in decisions).encode())
    process.stdin.close()
    async with asyncio.timeout(30):
        assert await process.stdout.readline() == b"recorded\n"
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL
    # Nothing closed the database: the decisions are only in the write-ahead log.
    assert path.with_name("decisions.sqlite3-wal").stat().st_size > 0

    ledger = await DecisionLedger.open(path)
    try:
        assert [await ledger.get(d.id) for d in decisions] == decisions
        assert await ledger.spent(since=NOW - timedelta(days=1)) == pytest.approx(0.15)
    finally:
        await ledger.close()


async def test_spent_sums_costs_since_a_time_per_backend(ledger: DecisionLedger) -> None:
    for decision in (
        make_decision(Tier.CLOUD, at=NOW - timedelta(days=1), cost_usd=5.0),
        make_decision(Tier.CLOUD, at=NOW - timedelta(hours=1), cost_usd=0.25),
        make_decision(Tier.CLOUD, at=NOW, backend="anthropic", cost_usd=0.5),
        make_decision(Tier.SEARCH, at=NOW, cost_usd=0.125),
        make_decision(Tier.LOCAL, at=NOW),
    ):
        await ledger.record(decision)

    since = NOW - timedelta(hours=1)
    assert await ledger.spent(since=since) == pytest.approx(0.875)
    assert await ledger.spent(since=since, backend="openai") == pytest.approx(0.25)
    assert await ledger.spent(since=since, backend="anthropic") == pytest.approx(0.5)
    assert await ledger.spent(since=since, backend="ollama") == 0.0
    assert await ledger.spent(since=NOW - timedelta(days=2)) == pytest.approx(5.875)
    assert await ledger.spent(since=NOW + timedelta(microseconds=1)) == 0.0


async def test_recent_scores_are_the_newest_scored_turns(ledger: DecisionLedger) -> None:
    for minutes, confidence in enumerate((0.1, None, 0.2, 0.3, None, 0.4)):
        decision = make_decision(at=NOW + timedelta(minutes=minutes), confidence=confidence)
        await ledger.record(decision)

    assert await ledger.recent_scores(3) == [0.4, 0.3, 0.2]
    assert await ledger.recent_scores(100) == [0.4, 0.3, 0.2, 0.1]


async def test_the_window_summarises_decisions_since_a_time(ledger: DecisionLedger) -> None:
    await ledger.record(make_decision(Tier.LOCAL, at=NOW - timedelta(hours=2)))
    await ledger.record(make_decision(Tier.CACHE, at=NOW - timedelta(minutes=5), latency_ms=3.5))
    await ledger.record(make_decision(Tier.CLOUD, at=NOW, latency_ms=900.0))

    assert await ledger.window(since=NOW - timedelta(hours=1)) == [
        DecisionSummary(
            at=NOW,
            tier=Tier.CLOUD,
            backend="openai",
            reason=RouteReason.LOW_CONFIDENCE,
            latency_ms=900.0,
            cache_hit=False,
        ),
        DecisionSummary(
            at=NOW - timedelta(minutes=5),
            tier=Tier.CACHE,
            backend="ollama",
            reason=RouteReason.EXACT_CACHE,
            latency_ms=3.5,
            cache_hit=True,
        ),
    ]


async def test_a_ledger_from_a_newer_router_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "decisions.sqlite3"
    ledger = await DecisionLedger.open(path)
    await ledger.record(make_decision())
    await ledger.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (1,)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        connection.execute("PRAGMA user_version = 2")

    with pytest.raises(RuntimeError, match="schema version 2"):
        await DecisionLedger.open(path)
