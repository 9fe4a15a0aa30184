"""Routing statistics: shares and latency over a recent window, costs by calendar day."""

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
import math

from kittyai.contract.routing import LastRoute, RouterStats, Tier, TierLatency
from kittyai.router.budgets import GLOBAL_SCOPE, BudgetGuard, period_start
from kittyai.router.ledger import DecisionLedger


async def router_stats(
    ledger: DecisionLedger,
    guard: BudgetGuard,
    *,
    threshold: float,
    now: datetime,
    window_hours: float,
) -> RouterStats:
    """Return the statistics as of `now` (timezone-aware).

    Shares, hit rate, latency and the last route cover the decisions of the last
    `window_hours`; costs cover the UTC day and month holding `now`.
    """
    window = await ledger.window(since=now - timedelta(hours=window_hours))
    latencies: defaultdict[Tier, list[float]] = defaultdict(list)
    for decision in window:
        latencies[decision.tier].append(decision.latency_ms)
    budgets = await guard.statuses(now)
    hard_global_left = [
        status.left_usd
        for status in budgets
        if status.scope == GLOBAL_SCOPE and status.left_usd is not None
    ]
    newest = window[0] if window else None
    return RouterStats(
        at=now,
        window_hours=window_hours,
        decisions=len(window),
        local_share=_share(sum(d.tier.handled_locally for d in window), len(window)),
        cache_hit_rate=_share(sum(d.cache_hit for d in window), len(window)),
        p95_latency_ms=percentile([d.latency_ms for d in window], 95),
        latency={
            tier: TierLatency(
                count=len(values), p50_ms=percentile(values, 50), p95_ms=percentile(values, 95)
            )
            for tier in Tier
            if (values := latencies.get(tier))
        },
        cost_today_usd=await ledger.spent(since=period_start("daily", now)),
        cost_month_usd=await ledger.spent(since=period_start("monthly", now)),
        budgets=budgets,
        budget_left_usd=min(hard_global_left, default=None),
        threshold=threshold,
        last_route=None
        if newest is None
        else LastRoute(
            at=newest.at, tier=newest.tier, backend=newest.backend, reason=newest.reason
        ),
    )


def percentile(values: Sequence[float], percent: float) -> float | None:
    """Return the nearest-rank percentile of `values`: a value that occurred; None if empty.

    It is the smallest value with at least `percent` % of the values at or below it.
    """
    if not values:
        return None
    rank = max(math.ceil(percent / 100 * len(values)), 1)
    return sorted(values)[rank - 1]


def _share(count: int, total: int) -> float | None:
    return count / total if total else None
