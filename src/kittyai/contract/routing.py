"""Payloads of the router's routing decisions and statistics.

The same models are the body of the router's HTTP answers (`GET /api/routing/logs`,
`GET /api/routing/stats`, the `kitty` field of a chat completion) and the payloads of
its MQTT topics, so Home Assistant reads one shape wherever it looks.
"""

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Usd = float


class Tier(StrEnum):
    """Where a turn was answered, cheapest first."""

    # Home Assistant's own intents matched; no model ran. Reported by the integration.
    INTENT = "intent"
    CACHE = "cache"
    LOCAL = "local"
    # The search-grounded cloud model, for questions about fresh facts.
    SEARCH = "search"
    CLOUD = "cloud"

    @property
    def handled_locally(self) -> bool:
        """Return whether an answer from this tier never left the house."""
        return self in {Tier.INTENT, Tier.CACHE, Tier.LOCAL}


class RouteReason(StrEnum):
    """Why a turn went where it went."""

    INTENT_MATCH = "intent_match"
    EXACT_CACHE = "exact_cache"
    SEMANTIC_CACHE = "semantic_cache"
    FRESHNESS = "freshness"
    CONFIDENT = "confident"
    LOW_CONFIDENCE = "low_confidence"
    # The caller asked for a profile or a backend that fixes the tier.
    REQUESTED = "requested"
    # A hard budget blocks the cloud: the local answer stands, flagged.
    BUDGET_EXCEEDED = "budget_exceeded"
    # No local backend answered, so the cloud did.
    LOCAL_UNAVAILABLE = "local_unavailable"
    # Every cloud backend failed or cooled down, so the local answer stands.
    CLOUD_UNAVAILABLE = "cloud_unavailable"


class TokenUsage(BaseModel):
    """Tokens of one turn, split the way prices are."""

    model_config = ConfigDict(extra="forbid")

    input: int = Field(default=0, ge=0, description="Input tokens not read from a prompt cache.")
    cache_read: int = Field(default=0, ge=0)
    cache_write: int = Field(default=0, ge=0)
    output: int = Field(default=0, ge=0, description="Output tokens, reasoning included.")
    reasoning: int = Field(default=0, ge=0)


class Attempt(BaseModel):
    """One call to one backend while routing a turn."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    model: str
    outcome: Literal["ok", "error", "low_confidence", "skipped_cooldown"]
    status: int | None = Field(default=None, description="HTTP status of a failed call.")
    error: str | None = None
    latency_ms: float = Field(ge=0)


class RoutingDecision(BaseModel):
    """How one turn was routed, what it cost and how long it took."""

    model_config = ConfigDict(extra="forbid", title="RoutingDecision")

    v: Literal[1] = 1
    id: str = Field(min_length=1)
    at: datetime
    correlation_id: str | None = None
    conversation_id: str | None = None
    profile: str
    tier: Tier
    backend: str | None = None
    model: str | None = None
    reason: RouteReason
    confidence: float | None = Field(
        default=None, description="Confidence of the local answer, 0 to 1, when one was scored."
    )
    threshold: float | None = None
    scores: dict[str, float] = Field(
        default_factory=dict, description="The signals the confidence was made of."
    )
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: Usd = Field(default=0.0, ge=0)
    latency_ms: float = Field(ge=0)
    ttft_ms: float | None = Field(default=None, ge=0, description="Time to first token.")
    stages_ms: dict[str, float] = Field(default_factory=dict)
    cache_hit: bool = False
    cache_similarity: float | None = None
    budget_blocked: bool = False
    notice: str | None = Field(default=None, description="What the user should be told.")
    attempts: list[Attempt] = Field(default_factory=list)


class BudgetState(StrEnum):
    """Where spending stands against one budget."""

    OK = "ok"
    SOFT = "soft"
    HARD = "hard"


class BudgetStatus(BaseModel):
    """One budget: a scope and a period, its limits and what was spent."""

    model_config = ConfigDict(extra="forbid")

    scope: str = Field(description="`global` or a backend name.")
    period: Literal["daily", "monthly"]
    spent_usd: Usd = Field(ge=0)
    soft_usd: Usd | None = None
    hard_usd: Usd | None = None
    left_usd: Usd | None = Field(default=None, description="Hard limit minus spent, at least 0.")
    state: BudgetState


class TierLatency(BaseModel):
    """Latency of the turns one tier answered."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=0)
    p50_ms: float | None = None
    p95_ms: float | None = None


class LastRoute(BaseModel):
    """The latest turn's route, for a glance."""

    model_config = ConfigDict(extra="forbid")

    at: datetime
    tier: Tier
    backend: str | None = None
    reason: RouteReason


class RouterStats(BaseModel):
    """Routing statistics: shares and latency over a window, costs by calendar (UTC)."""

    model_config = ConfigDict(extra="forbid", title="RouterStats")

    v: Literal[1] = 1
    at: datetime
    window_hours: float = Field(gt=0)
    decisions: int = Field(ge=0, description="Turns in the window.")
    local_share: float | None = Field(
        default=None, description="Share of turns in the window answered without the cloud."
    )
    cache_hit_rate: float | None = None
    p95_latency_ms: float | None = None
    latency: dict[Tier, TierLatency] = Field(default_factory=dict)
    cost_today_usd: Usd = Field(ge=0)
    cost_month_usd: Usd = Field(ge=0)
    budgets: list[BudgetStatus] = Field(default_factory=list)
    budget_left_usd: Usd | None = Field(
        default=None, description="The smallest amount left under any hard global budget."
    )
    threshold: float = Field(description="The confidence threshold the local tier uses now.")
    last_route: LastRoute | None = None
