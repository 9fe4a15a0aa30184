"""Routing decisions for the ledger, budget, calibration and stats tests."""

from datetime import UTC, datetime
from typing import Any
import uuid

from kittyai.contract.routing import RouteReason, RoutingDecision, Tier

# Mid-month, mid-day (UTC): yesterday and last month are both at hand.
NOW = datetime(2026, 3, 15, 14, 30, tzinfo=UTC)

_REASONS = {
    Tier.INTENT: RouteReason.INTENT_MATCH,
    Tier.CACHE: RouteReason.EXACT_CACHE,
    Tier.LOCAL: RouteReason.CONFIDENT,
    Tier.SEARCH: RouteReason.FRESHNESS,
    Tier.CLOUD: RouteReason.LOW_CONFIDENCE,
}
_BACKENDS = {
    Tier.INTENT: None,
    Tier.CACHE: "ollama",
    Tier.LOCAL: "ollama",
    Tier.SEARCH: "perplexity",
    Tier.CLOUD: "openai",
}


def make_decision(tier: Tier = Tier.LOCAL, *, at: datetime = NOW, **fields: Any) -> RoutingDecision:
    """Return a plausible decision of `tier` at `at`; `fields` override the rest."""
    values: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "at": at,
        "profile": "kitty-auto",
        "tier": tier,
        "backend": _BACKENDS[tier],
        "reason": _REASONS[tier],
        "cache_hit": tier is Tier.CACHE,
        "latency_ms": 100.0,
    }
    return RoutingDecision(**(values | fields))
