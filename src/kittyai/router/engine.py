"""The routing engine: one chat turn through the tiers, cheapest first.

1. the answer cache (exact, then semantic);
2. fresh facts go to the search backend;
3. the local model, trusted when its confidence clears the threshold;
4. the cloud, with retries, cooldown of failing backends and fallback to the next one.

Every turn ends in one `RoutingDecision`, recorded in the ledger before the answer's
last event is handed out, so a crash cannot lose a turn the user saw.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
import logging
import time
import uuid

from kittyai.contract.routing import Attempt, RouteReason, RoutingDecision, Tier, TokenUsage
from kittyai.router import confidence
from kittyai.router.backends.base import Backend, BackendError, BackendReply, ChatRequest
from kittyai.router.budgets import BudgetGuard
from kittyai.router.cache import AnswerCache
from kittyai.router.calibration import ThresholdCalibrator
from kittyai.router.classify import context_fingerprint, freshness_cue
from kittyai.router.ledger import DecisionLedger
from kittyai.router.options import BackendOptions, BackendRole, RouterOptions

_LOGGER = logging.getLogger(__name__)

PROFILE_AUTO = "kitty-auto"
PROFILE_LOCAL = "kitty-local"
PROFILE_CLOUD = "kitty-cloud"
PROFILES: dict[str, str] = {
    PROFILE_AUTO: "Local first; the cloud when the local model is unsure or facts must be fresh.",
    PROFILE_LOCAL: "Local models only; nothing leaves the house.",
    PROFILE_CLOUD: "Cloud models; fresh facts from the search model.",
}
_ROLE_TIERS = {
    BackendRole.LOCAL: Tier.LOCAL,
    BackendRole.CLOUD: Tier.CLOUD,
    BackendRole.SEARCH: Tier.SEARCH,
}
# Waits between retries of one backend: short, since a fallback backend is next in line.
RETRY_BASE_DELAY = 0.25
MAX_RETRY_DELAY = 5.0
CLOUD_UNAVAILABLE_NOTICE = "The cloud models could not be reached, so the local model answered."
NO_ANSWER_NOTICE = "No model could answer."

type DecisionListener = Callable[[RoutingDecision], Awaitable[None]]


class UnknownModelError(LookupError):
    """The request named neither a profile nor a backend."""


class NoAnswerError(Exception):
    """Every backend that could answer failed; the decision says which and why."""

    def __init__(self, decision: RoutingDecision) -> None:
        """Keep the recorded decision for the caller's error answer."""
        super().__init__(NO_ANSWER_NOTICE)
        self.decision = decision


@dataclass(frozen=True, slots=True, kw_only=True)
class Turn:
    """One chat turn to route."""

    profile: str
    request: ChatRequest
    conversation_id: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """Where the turn is being answered; sent once, before the answer's first text."""

    tier: Tier
    backend: str | None
    model: str | None
    reason: RouteReason
    confidence: float | None


@dataclass(frozen=True, slots=True)
class Answer:
    """The end of a turn: the whole reply and its recorded decision."""

    reply: BackendReply
    decision: RoutingDecision


type TurnEvent = Route | str | Answer


@dataclass(slots=True)
class _LocalResult:
    backend: BackendOptions
    reply: BackendReply
    confidence: float | None
    signals: dict[str, float]
    # Whether the confidence cleared the threshold; with no score the answer stands.
    trusted: bool


@dataclass(slots=True)
class _TurnState:
    """What routing one turn has learned so far."""

    turn: Turn
    started: float
    # The cache scope: the profile and what shapes the answer besides the question.
    scope: str
    attempts: list[Attempt] = field(default_factory=list)
    stages_ms: dict[str, float] = field(default_factory=dict)
    ttft_ms: float | None = None
    route_sent: bool = False
    budget_blocked: bool = False
    notice: str | None = None
    # Set once a remote backend answered.
    remote: tuple[BackendOptions, BackendReply] | None = None

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000


class RoutingEngine:
    """Routes chat turns over the configured backends and records every decision."""

    def __init__(
        self,
        *,
        options: RouterOptions,
        backends: Mapping[str, Backend],
        ledger: DecisionLedger,
        guard: BudgetGuard,
        calibrator: ThresholdCalibrator,
        cache: AnswerCache | None,
        on_decision: DecisionListener,
    ) -> None:
        """Route over `backends`, one per configured backend, by name."""
        self._options = options
        self._backends = backends
        self._ledger = ledger
        self._guard = guard
        self._calibrator = calibrator
        self._cache = cache
        self._on_decision = on_decision
        # Backend name → monotonic time until which it is left out.
        self._cooldown_until: dict[str, float] = {}

    @property
    def threshold(self) -> float:
        """Return the confidence threshold the local tier uses now."""
        return self._calibrator.threshold

    def knows_model(self, model: str) -> bool:
        """Return whether `model` names a profile or a backend."""
        return model in PROFILES or model in self._backends

    async def run(self, turn: Turn) -> AsyncIterator[TurnEvent]:
        """Route `turn`: yield its `Route`, its text deltas, and its `Answer` last.

        Raise `UnknownModelError` before anything is routed, and `NoAnswerError`
        (after recording the decision) when no backend could answer.
        """
        if not self.knows_model(turn.profile):
            raise UnknownModelError(turn.profile)
        fingerprint = context_fingerprint(turn.request.messages, turn.request.tools)
        state = _TurnState(
            turn=turn, started=time.monotonic(), scope=f"{turn.profile}:{fingerprint}"
        )

        if self._cache is not None:
            stage_start = time.monotonic()
            hit = await self._cache.lookup(state.scope, turn.request.messages)
            state.stages_ms["cache"] = (time.monotonic() - stage_start) * 1000
            if hit is not None:
                reason = (
                    RouteReason.EXACT_CACHE if hit.kind == "exact" else RouteReason.SEMANTIC_CACHE
                )
                route = Route(Tier.CACHE, hit.backend, hit.reply.model, reason, None)
                async for event in self._emit(state, route, hit.reply):
                    yield event
                decision = self._decision(state, route, hit.reply, cache_similarity=hit.similarity)
                yield Answer(hit.reply, await self._finish(decision))
                return

        if turn.profile in self._backends:
            tiers = self._run_on_backend(state, self._options_of(turn.profile))
        else:
            tiers = self._run_profile(state)
        async for event in tiers:
            yield event

    async def _run_profile(self, state: _TurnState) -> AsyncIterator[TurnEvent]:
        """Route through the tiers a profile allows: search, local, then cloud."""
        profile = state.turn.profile
        search_missed = False
        if profile != PROFILE_LOCAL and freshness_cue(_last_user_text(state.turn.request.messages)):
            search = self._options.with_role(BackendRole.SEARCH)
            async for event in self._remote(state, search, Tier.SEARCH, RouteReason.FRESHNESS):
                yield event
            if state.remote is not None:
                yield await self._answer_remote(state, Tier.SEARCH, RouteReason.FRESHNESS)
                return
            search_missed = bool(search)

        local: _LocalResult | None = None
        if profile != PROFILE_CLOUD:
            local = await self._local(state, self._options.with_role(BackendRole.LOCAL))
        if local is not None and (search_missed or profile == PROFILE_LOCAL or local.trusted):
            if search_missed:
                # A fresh fact was asked and the search model could not be used: say so.
                reason = self._fallback_reason(state)
            elif profile == PROFILE_LOCAL:
                reason = RouteReason.REQUESTED
            else:
                reason = RouteReason.CONFIDENT
            async for event in self._answer_local(state, local, reason):
                yield event
            return
        if profile == PROFILE_LOCAL:
            raise NoAnswerError(await self._record_failure(state, Tier.LOCAL))
        async for event in self._escalate(state, local):
            yield event

    async def _escalate(
        self, state: _TurnState, local: _LocalResult | None
    ) -> AsyncIterator[TurnEvent]:
        """Answer in the cloud; fall back to the local answer when the cloud can't."""
        if local is not None:
            reason = RouteReason.LOW_CONFIDENCE
            state.attempts.append(
                Attempt(
                    backend=local.backend.name,
                    model=local.reply.model,
                    outcome="low_confidence",
                    latency_ms=state.stages_ms.get("local", 0.0),
                )
            )
        elif state.turn.profile == PROFILE_CLOUD:
            reason = RouteReason.REQUESTED
        else:
            reason = RouteReason.LOCAL_UNAVAILABLE
        cloud = self._options.with_role(BackendRole.CLOUD)
        async for event in self._remote(state, cloud, Tier.CLOUD, reason):
            yield event
        if state.remote is not None:
            yield await self._answer_remote(state, Tier.CLOUD, reason, local)
            return
        if local is None:
            raise NoAnswerError(await self._record_failure(state, Tier.CLOUD))
        async for event in self._answer_local(state, local, self._fallback_reason(state)):
            yield event

    async def record_intent_turn(
        self,
        *,
        conversation_id: str | None,
        correlation_id: str | None,
        latency_ms: float,
        intent: str | None,
    ) -> RoutingDecision:
        """Record a turn Home Assistant's own intents answered, so shares count it."""
        decision = RoutingDecision(
            id=uuid.uuid4().hex,
            at=datetime.now(UTC),
            correlation_id=correlation_id,
            conversation_id=conversation_id,
            profile=PROFILE_AUTO,
            tier=Tier.INTENT,
            model=intent,
            reason=RouteReason.INTENT_MATCH,
            latency_ms=latency_ms,
        )
        return await self._finish(decision)

    async def _run_on_backend(
        self, state: _TurnState, backend: BackendOptions
    ) -> AsyncIterator[TurnEvent]:
        """Answer on the one backend the caller named."""
        tier = _ROLE_TIERS[backend.role]
        if backend.role is BackendRole.LOCAL:
            local = await self._local(state, [backend])
            if local is None:
                raise NoAnswerError(await self._record_failure(state, tier))
            async for event in self._answer_local(state, local, RouteReason.REQUESTED):
                yield event
            return
        async for event in self._remote(state, [backend], tier, RouteReason.REQUESTED):
            yield event
        if state.remote is None:
            raise NoAnswerError(await self._record_failure(state, tier))
        yield await self._answer_remote(state, tier, RouteReason.REQUESTED)

    async def _local(
        self, state: _TurnState, backends: Sequence[BackendOptions]
    ) -> _LocalResult | None:
        """Ask the first local backend that answers, and score its answer."""
        request = replace(state.turn.request, logprobs=True)
        for options in backends:
            if self._cooling_down(options, state):
                continue
            started = time.monotonic()
            try:
                reply = await self._backends[options.name].complete(request)
            except BackendError as err:
                self._note_failure(state, options, err, started)
                continue
            state.stages_ms["local"] = (time.monotonic() - started) * 1000
            scored = await self._score(state, options, reply)
            return _LocalResult(
                backend=options,
                reply=reply,
                confidence=scored.score if scored else None,
                signals=scored.signals if scored else {},
                trusted=scored is None or scored.score >= self.threshold,
            )
        return None

    async def _score(
        self, state: _TurnState, options: BackendOptions, reply: BackendReply
    ) -> confidence.Confidence | None:
        """Score a local answer; tool calls are checked by running them, not here."""
        if (scored := confidence.from_logprobs(reply.logprobs or ())) is not None:
            return scored
        if reply.tool_calls or not self._options.routing.self_check:
            return None
        started = time.monotonic()
        try:
            grade = await self._backends[options.name].complete(
                confidence.self_check_request(state.turn.request.messages, reply.content)
            )
        except BackendError as err:
            _LOGGER.warning("Self-check on %s failed: %s", options.name, err)
            return confidence.from_self_check("")
        finally:
            state.stages_ms["self_check"] = (time.monotonic() - started) * 1000
        return confidence.from_self_check(grade.content)

    async def _remote(
        self,
        state: _TurnState,
        backends: Sequence[BackendOptions],
        tier: Tier,
        reason: RouteReason,
    ) -> AsyncIterator[TurnEvent]:
        """Stream from the first remote backend that answers; sets `state.remote`."""
        stage_start = time.monotonic()
        try:
            for options in backends:
                if self._cooling_down(options, state):
                    continue
                verdict = await self._guard.check(options.name, datetime.now(UTC))
                if verdict.blocked:
                    state.budget_blocked = True
                    state.notice = verdict.notice
                    continue
                async for event in self._stream_with_retries(state, options, tier, reason):
                    yield event
                if state.remote is not None:
                    return
        finally:
            state.stages_ms[tier.value] = (time.monotonic() - stage_start) * 1000

    async def _stream_with_retries(
        self, state: _TurnState, options: BackendOptions, tier: Tier, reason: RouteReason
    ) -> AsyncIterator[TurnEvent]:
        """Stream from one backend, retrying what may pass later; cool it down if all fail."""
        for attempt in range(options.max_retries + 1):
            started = time.monotonic()
            emitted = False
            try:
                async for item in self._backends[options.name].stream(state.turn.request):
                    if not state.route_sent:
                        state.route_sent = True
                        yield Route(tier, options.name, options.model, reason, None)
                    if isinstance(item, BackendReply):
                        state.remote = (options, item)
                    elif item:
                        emitted = True
                        state.ttft_ms = state.ttft_ms or state.elapsed_ms()
                        yield item
            except BackendError as err:
                self._note_failure(state, options, err, started)
                if emitted:
                    # Text already streamed cannot be taken back: no retry, no fallback.
                    raise NoAnswerError(await self._record_failure(state, tier)) from err
                if not err.retryable:
                    return
                if attempt < options.max_retries:
                    await asyncio.sleep(_retry_delay(err, attempt))
                continue
            state.attempts.append(
                Attempt(
                    backend=options.name,
                    model=options.model,
                    outcome="ok",
                    latency_ms=(time.monotonic() - started) * 1000,
                )
            )
            return
        self._cooldown_until[options.name] = (
            time.monotonic() + self._options.routing.cooldown_seconds
        )
        _LOGGER.warning(
            "Backend %s failed %d times; left out for %.0f s",
            options.name,
            options.max_retries + 1,
            self._options.routing.cooldown_seconds,
        )

    async def _answer_local(
        self, state: _TurnState, local: _LocalResult, reason: RouteReason
    ) -> AsyncIterator[TurnEvent]:
        route = Route(Tier.LOCAL, local.backend.name, local.reply.model, reason, local.confidence)
        async for event in self._emit(state, route, local.reply):
            yield event
        decision = self._decision(
            state,
            route,
            local.reply,
            scores=local.signals,
            budget_blocked=reason is RouteReason.BUDGET_EXCEEDED,
        )
        trusted = reason in _TRUSTED
        yield Answer(
            local.reply,
            await self._finish(
                decision, state=state if trusted else None, reply=local.reply if trusted else None
            ),
        )

    async def _answer_remote(
        self,
        state: _TurnState,
        tier: Tier,
        reason: RouteReason,
        local: _LocalResult | None = None,
    ) -> Answer:
        assert state.remote is not None  # noqa: S101 - callers check
        options, reply = state.remote
        route = Route(tier, options.name, reply.model, reason, local.confidence if local else None)
        decision = self._decision(
            state,
            route,
            reply,
            scores=local.signals if local else None,
            cost_usd=options.price.cost(reply.usage),
        )
        # Fresh facts go stale: only general cloud answers are worth keeping.
        general = tier is Tier.CLOUD
        return Answer(
            reply,
            await self._finish(
                decision, state=state if general else None, reply=reply if general else None
            ),
        )

    async def _emit(
        self, state: _TurnState, route: Route, reply: BackendReply
    ) -> AsyncIterator[TurnEvent]:
        """Hand out an answer that is already whole: its route, then its text at once."""
        state.route_sent = True
        yield route
        if reply.content:
            state.ttft_ms = state.elapsed_ms()
            yield reply.content

    def _decision(
        self,
        state: _TurnState,
        route: Route,
        reply: BackendReply | None,
        *,
        scores: dict[str, float] | None = None,
        cost_usd: float = 0.0,
        cache_similarity: float | None = None,
        budget_blocked: bool = False,
    ) -> RoutingDecision:
        turn = state.turn
        return RoutingDecision(
            id=uuid.uuid4().hex,
            at=datetime.now(UTC),
            correlation_id=turn.correlation_id,
            conversation_id=turn.conversation_id,
            profile=turn.profile,
            tier=route.tier,
            backend=route.backend,
            model=route.model,
            reason=route.reason,
            confidence=route.confidence,
            threshold=self.threshold if route.confidence is not None else None,
            scores=scores or {},
            usage=reply.usage if reply else TokenUsage(),
            cost_usd=cost_usd,
            latency_ms=state.elapsed_ms(),
            ttft_ms=state.ttft_ms,
            stages_ms=state.stages_ms,
            cache_hit=route.tier is Tier.CACHE,
            cache_similarity=cache_similarity,
            budget_blocked=budget_blocked,
            notice=state.notice if budget_blocked or route.reason in _NOTICED else None,
            attempts=state.attempts,
        )

    async def _record_failure(self, state: _TurnState, tier: Tier) -> RoutingDecision:
        reason = (
            RouteReason.LOCAL_UNAVAILABLE if tier is Tier.LOCAL else (RouteReason.CLOUD_UNAVAILABLE)
        )
        state.notice = state.notice or NO_ANSWER_NOTICE
        route = Route(tier, None, None, reason, None)
        return await self._finish(
            self._decision(state, route, None, budget_blocked=state.budget_blocked)
        )

    async def _finish(
        self,
        decision: RoutingDecision,
        *,
        state: _TurnState | None = None,
        reply: BackendReply | None = None,
    ) -> RoutingDecision:
        """Record the decision durably, then tell the listeners and the calibrator.

        With `state` and `reply`, the answer is also offered to the cache, which
        keeps only what it may serve again.
        """
        await self._ledger.record(decision)
        if self._cache is not None and state is not None and reply is not None:
            await self._cache.store(
                state.scope, state.turn.request.messages, reply, backend=decision.backend or ""
            )
        await self._on_decision(decision)
        if decision.confidence is not None:
            await self._calibrator.note_decision(self._ledger)
        return decision

    @staticmethod
    def _fallback_reason(state: _TurnState) -> RouteReason:
        """Return why the local answer stands although the turn wanted a remote one."""
        if state.budget_blocked:
            return RouteReason.BUDGET_EXCEEDED
        state.notice = state.notice or CLOUD_UNAVAILABLE_NOTICE
        return RouteReason.CLOUD_UNAVAILABLE

    def _options_of(self, name: str) -> BackendOptions:
        return next(backend for backend in self._options.backends if backend.name == name)

    def _cooling_down(self, options: BackendOptions, state: _TurnState) -> bool:
        if self._cooldown_until.get(options.name, 0.0) <= time.monotonic():
            return False
        state.attempts.append(
            Attempt(
                backend=options.name,
                model=options.model,
                outcome="skipped_cooldown",
                latency_ms=0.0,
            )
        )
        return True

    def _note_failure(
        self, state: _TurnState, options: BackendOptions, err: BackendError, started: float
    ) -> None:
        _LOGGER.warning("Backend %s failed: %s", options.name, err)
        state.attempts.append(
            Attempt(
                backend=options.name,
                model=options.model,
                outcome="error",
                status=err.status,
                error=str(err),
                latency_ms=(time.monotonic() - started) * 1000,
            )
        )


# Local answers worth caching: the ones trusted on their own merit.
_TRUSTED = frozenset({RouteReason.CONFIDENT, RouteReason.REQUESTED})
# Reasons the user is told about.
_NOTICED = frozenset(
    {
        RouteReason.BUDGET_EXCEEDED,
        RouteReason.CLOUD_UNAVAILABLE,
        RouteReason.LOCAL_UNAVAILABLE,
    }
)


def _retry_delay(err: BackendError, attempt: int) -> float:
    if err.retry_after is not None:
        return min(err.retry_after, MAX_RETRY_DELAY)
    return min(RETRY_BASE_DELAY * 2.0**attempt, MAX_RETRY_DELAY)


def _last_user_text(messages: Sequence[dict[str, object]]) -> str:
    """Return the text of the newest message if the user wrote it, else ''."""
    if not messages or messages[-1].get("role") != "user":
        return ""
    content = messages[-1].get("content")
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")
