"""Options of the router: its backends, budgets, cache and routing policy."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from kittyai.contract.routing import TokenUsage
from kittyai.options import ServiceOptions

PER_MILLION = 1_000_000


class BackendKind(StrEnum):
    """The wire protocol a backend speaks."""

    OLLAMA = "ollama"
    # llama.cpp server, LM Studio, vLLM: OpenAI's Chat Completions on the LAN.
    OPENAI_COMPATIBLE = "openai_compatible"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    # Search-grounded answers for fresh facts, through its OpenAI-compatible API.
    PERPLEXITY = "perplexity"


class BackendRole(StrEnum):
    """Which tier a backend serves."""

    LOCAL = "local"
    CLOUD = "cloud"
    SEARCH = "search"


_ROLES = {
    BackendKind.OLLAMA: BackendRole.LOCAL,
    BackendKind.OPENAI_COMPATIBLE: BackendRole.LOCAL,
    BackendKind.OPENAI: BackendRole.CLOUD,
    BackendKind.ANTHROPIC: BackendRole.CLOUD,
    BackendKind.PERPLEXITY: BackendRole.SEARCH,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """What a backend charges, in USD per million tokens (and per request)."""

    input: float
    cached_input: float
    cache_write: float
    output: float
    per_request: float

    def cost(self, usage: TokenUsage) -> float:
        """Return the USD cost of one call; reasoning tokens are already in `output`."""
        tokens = (
            usage.input * self.input
            + usage.cache_read * self.cached_input
            + usage.cache_write * self.cache_write
            + usage.output * self.output
        )
        return tokens / PER_MILLION + self.per_request


class BackendOptions(BaseModel):
    """One model server the router may call."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    kind: BackendKind
    url: str = Field(min_length=1, description="Base URL, e.g. http://127.0.0.1:11434.")
    model: str = Field(min_length=1)
    api_key: SecretStr | None = None
    # Seconds for a whole call; a stream may take this long between two chunks.
    timeout: float = Field(default=60.0, gt=0)
    # Retries of a failed call to this backend before falling back to the next one.
    max_retries: int = Field(default=2, ge=0, le=5)
    # Flat rather than nested: app options allow one level of nesting (a list of dicts).
    price_input: float = Field(default=0.0, ge=0)
    price_cached_input: float = Field(default=0.0, ge=0)
    price_cache_write: float = Field(default=0.0, ge=0)
    price_output: float = Field(default=0.0, ge=0)
    price_per_request: float = Field(default=0.0, ge=0)
    # Ollama only: how long the model stays loaded, and its context size.
    keep_alive: str | None = "30m"
    num_ctx: int | None = Field(default=8192, ge=256)
    # OpenAI only: which of its two APIs to speak.
    api: Literal["chat_completions", "responses"] = "chat_completions"

    @property
    def role(self) -> BackendRole:
        """Return the tier this backend serves."""
        return _ROLES[self.kind]

    @property
    def price(self) -> Price:
        """Return what this backend charges."""
        return Price(
            input=self.price_input,
            cached_input=self.price_cached_input,
            cache_write=self.price_cache_write,
            output=self.price_output,
            per_request=self.price_per_request,
        )


class BudgetOptions(BaseModel):
    """A spending limit for a scope and a period; either limit may be left out."""

    model_config = ConfigDict(extra="forbid")

    scope: str = Field(default="global", description="`global` or a backend name.")
    period: Literal["daily", "monthly"]
    soft_usd: float | None = Field(default=None, ge=0)
    hard_usd: float | None = Field(default=None, ge=0)


class CacheOptions(BaseModel):
    """The answer cache: exact repeats, then paraphrases of general questions."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    semantic: bool = True
    # Cosine similarity of MiniLM embeddings at which a paraphrase counts as the same question.
    similarity: float = Field(default=0.9, gt=0, le=1)
    ttl_hours: float = Field(default=168.0, gt=0)
    max_entries: int = Field(default=10_000, ge=1)


class RoutingOptions(BaseModel):
    """How the local tier is trusted."""

    model_config = ConfigDict(extra="forbid")

    # Local answers scoring below this escalate to the cloud.
    confidence_threshold: float = Field(default=0.5, ge=0, le=1)
    # When set, the threshold is recalibrated so this share of scored turns stays local.
    target_local_share: float | None = Field(default=None, gt=0, lt=1)
    # How many recent scores the recalibration looks at, and how often it runs.
    calibration_window: int = Field(default=500, ge=10)
    recalibrate_every: int = Field(default=25, ge=1)
    # Without logprobs, ask the local model whether its own answer is right.
    self_check: bool = True
    # Seconds a backend that kept failing is left out.
    cooldown_seconds: float = Field(default=30.0, ge=0)
    # Hours of decisions the statistics cover.
    stats_window_hours: float = Field(default=24.0, gt=0)


class RouterOptions(ServiceOptions):
    """Options of the router service."""

    backends: list[BackendOptions] = Field(default_factory=list)
    budgets: list[BudgetOptions] = Field(default_factory=list)
    cache: CacheOptions = Field(default_factory=CacheOptions)
    routing: RoutingOptions = Field(default_factory=RoutingOptions)

    @model_validator(mode="after")
    def _check_names(self) -> Self:
        names = [backend.name for backend in self.backends]
        if len(set(names)) != len(names):
            raise ValueError("backend names must be unique")
        scopes = {"global", *names}
        for budget in self.budgets:
            if budget.scope not in scopes:
                raise ValueError(f"budget scope {budget.scope!r} is not a backend name")
        return self

    def with_role(self, role: BackendRole) -> list[BackendOptions]:
        """Return the backends serving `role`, in the order they were configured."""
        return [backend for backend in self.backends if backend.role is role]
