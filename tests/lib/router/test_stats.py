"""Router statistics over a window of decisions, and costs by UTC calendar."""

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from kittyai.contract.routing import LastRoute, RouteReason, Tier, TierLatency
from kittyai.router.budgets import BudgetGuard
from kittyai.router.ledger import DecisionLedger
from kittyai.router.options import BudgetOptions
from kittyai.router.stats import percentile, router_stats
from tests.lib.router.decisions import NOW, make_decision

TODAY = NOW.replace(hour=0, minute=0)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[DecisionLedger]:
    ledger = await DecisionLedger.open(tmp_path / "decisions.sqlite3")
    yield ledger
    await ledger.close()


async def record(ledger: DecisionLedger, tier: Tier, at: datetime, **fields: object) -> None:
    await ledger.record(make_decision(tier, at=at, **fields))


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 95) is None
    assert percentile([7.0], 50) == 7.0
    assert percentile([40.0, 10.0, 30.0, 20.0], 50) == 20.0
    assert percentile([float(n) for n in range(1, 21)], 95) == 19.0
    assert percentile([float(n) for n in range(1, 11)], 95) == 10.0


async def test_stats_of_a_known_set_of_turns(ledger: DecisionLedger) -> None:
    hour = timedelta(hours=1)
    for latency in (20.0, 30.0, 40.0):
        await record(ledger, Tier.INTENT, TODAY + 2 * hour, latency_ms=latency)
    await record(ledger, Tier.CACHE, TODAY + 3 * hour, latency_ms=5.0)
    for latency in (400.0, 600.0, 800.0, 1000.0):
        await record(ledger, Tier.LOCAL, TODAY + 4 * hour, latency_ms=latency)
    # Within the last 24 hours, but yesterday: in the shares, not in today's cost.
    await record(ledger, Tier.CLOUD, TODAY - 4 * hour, latency_ms=2500.0, cost_usd=0.2)
    await record(ledger, Tier.CLOUD, TODAY + 9 * hour, latency_ms=1500.0, cost_usd=0.3)
    newest = NOW - timedelta(minutes=1)
    await record(ledger, Tier.LOCAL, newest, latency_ms=700.0, reason=RouteReason.REQUESTED)
    # Outside the window: this month's cost only, then last month's (neither).
    await record(ledger, Tier.CLOUD, TODAY.replace(day=2), cost_usd=1.0)
    await record(ledger, Tier.CLOUD, TODAY.replace(month=2, day=27), cost_usd=4.0)
    guard = BudgetGuard(
        ledger,
        [
            BudgetOptions(period="daily", soft_usd=0.25, hard_usd=1.0),
            BudgetOptions(period="monthly", hard_usd=2.0),
            BudgetOptions(scope="openai", period="monthly", hard_usd=1.0),
            BudgetOptions(period="monthly", soft_usd=10.0),
        ],
    )

    stats = await router_stats(ledger, guard, threshold=0.62, now=NOW, window_hours=24)

    assert stats.decisions == 11
    # 3 intent + 1 cache + 5 local of 11; the 2 cloud turns left the house.
    assert stats.local_share == pytest.approx(9 / 11)
    assert stats.cache_hit_rate == pytest.approx(1 / 11)
    assert stats.latency == {
        Tier.INTENT: TierLatency(count=3, p50_ms=30.0, p95_ms=40.0),
        Tier.CACHE: TierLatency(count=1, p50_ms=5.0, p95_ms=5.0),
        Tier.LOCAL: TierLatency(count=5, p50_ms=700.0, p95_ms=1000.0),
        Tier.CLOUD: TierLatency(count=2, p50_ms=1500.0, p95_ms=2500.0),
    }
    assert stats.p95_latency_ms == 2500.0
    assert stats.cost_today_usd == pytest.approx(0.3)
    assert stats.cost_month_usd == pytest.approx(1.5)
    assert [(s.scope, s.state, s.left_usd) for s in stats.budgets] == [
        ("global", "soft", pytest.approx(0.7)),
        ("global", "ok", pytest.approx(0.5)),
        ("openai", "hard", 0.0),
        ("global", "ok", None),
    ]
    # The tightest hard global budget; backend budgets do not count.
    assert stats.budget_left_usd == pytest.approx(0.5)
    assert stats.threshold == 0.62
    assert stats.last_route == LastRoute(
        at=newest, tier=Tier.LOCAL, backend="ollama", reason=RouteReason.REQUESTED
    )
    assert stats.at == NOW
    assert stats.window_hours == 24


async def test_the_hand_built_mix_is_four_fifths_local(ledger: DecisionLedger) -> None:
    tiers = [Tier.INTENT] * 3 + [Tier.CACHE] + [Tier.LOCAL] * 4 + [Tier.CLOUD] * 2
    for n, tier in enumerate(tiers):
        await record(ledger, tier, NOW - timedelta(minutes=n))

    stats = await router_stats(
        ledger, BudgetGuard(ledger, []), threshold=0.5, now=NOW, window_hours=1
    )

    assert stats.decisions == 10
    assert stats.local_share == pytest.approx(0.8)
    assert stats.cache_hit_rate == pytest.approx(0.1)
    assert stats.budgets == []
    assert stats.budget_left_usd is None


async def test_stats_of_an_empty_window(ledger: DecisionLedger) -> None:
    await record(ledger, Tier.CLOUD, NOW - timedelta(hours=3), cost_usd=0.4)
    guard = BudgetGuard(ledger, [BudgetOptions(period="daily", hard_usd=1.0)])

    stats = await router_stats(ledger, guard, threshold=0.5, now=NOW, window_hours=2)

    assert stats.decisions == 0
    assert stats.local_share is None
    assert stats.cache_hit_rate is None
    assert stats.p95_latency_ms is None
    assert stats.latency == {}
    assert stats.last_route is None
    # Costs go by the calendar, not by the window.
    assert stats.cost_today_usd == pytest.approx(0.4)
    assert stats.budget_left_usd == pytest.approx(0.6)
