"""What the router tells the world about its decisions: metrics, MQTT events and stats."""

import asyncio
import contextlib
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kittyai.contract import ROUTER_DECISION, ROUTER_STATS
from kittyai.contract.routing import RouterStats, RoutingDecision
from kittyai.mqtt import MqttLink
from kittyai.router.budgets import BudgetGuard
from kittyai.router.calibration import ThresholdCalibrator
from kittyai.router.ledger import DecisionLedger
from kittyai.router.stats import router_stats

# Stats are re-sent at most this often, however many turns arrive.
STATS_MIN_INTERVAL = 1.0
# Without turns the stats still change (a new day resets today's cost): refresh anyway.
STATS_REFRESH_INTERVAL = 300.0
_LATENCY_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _RouterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "kitty_router_decisions",
            "Routed turns by tier and reason.",
            ["tier", "reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "kitty_router_turn_latency_seconds",
            "Time to the whole answer, by tier.",
            ["tier"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "kitty_router_time_to_first_token_seconds",
            "Time to the first text of the answer, by tier.",
            ["tier"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.cost = Counter(
            "kitty_router_cost_usd",
            "What the answers cost, by backend.",
            ["backend"],
            registry=registry,
        )
        self.tokens = Counter(
            "kitty_router_tokens",
            "Tokens by backend and kind (input, cache_read, cache_write, output, reasoning).",
            ["backend", "kind"],
            registry=registry,
        )
        self.backend_errors = Counter(
            "kitty_router_backend_errors",
            "Failed backend calls, by backend.",
            ["backend"],
            registry=registry,
        )
        self.threshold = Gauge(
            "kitty_router_confidence_threshold",
            "The confidence the local tier needs now.",
            registry=registry,
        )

    def observe(self, decision: RoutingDecision, threshold: float) -> None:
        tier = decision.tier.value
        self.decisions.labels(tier, decision.reason.value).inc()
        self.latency.labels(tier).observe(decision.latency_ms / 1000)
        if decision.ttft_ms is not None:
            self.ttft.labels(tier).observe(decision.ttft_ms / 1000)
        if decision.backend:
            self.cost.labels(decision.backend).inc(decision.cost_usd)
            for kind, count in decision.usage.model_dump().items():
                if count:
                    self.tokens.labels(decision.backend, kind).inc(count)
        for attempt in decision.attempts:
            if attempt.outcome == "error":
                self.backend_errors.labels(attempt.backend).inc()
        self.threshold.set(threshold)


class RouterTelemetry:
    """Publishes each decision and keeps the retained stats fresh."""

    def __init__(
        self,
        *,
        mqtt: MqttLink,
        registry: CollectorRegistry,
        ledger: DecisionLedger,
        guard: BudgetGuard,
        calibrator: ThresholdCalibrator,
        window_hours: float,
    ) -> None:
        """Publish through `mqtt` and count into `registry`."""
        self._mqtt = mqtt
        self._metrics = _RouterMetrics(registry)
        self._ledger = ledger
        self._guard = guard
        self._calibrator = calibrator
        self._window_hours = window_hours
        self._stats_due = asyncio.Event()

    async def on_decision(self, decision: RoutingDecision) -> None:
        """Count a recorded decision, send it as an event and ask for fresh stats."""
        self._metrics.observe(decision, self._calibrator.threshold)
        self._mqtt.publish_event(ROUTER_DECISION.pattern, decision, qos=ROUTER_DECISION.qos)
        self._stats_due.set()

    async def stats(self) -> RouterStats:
        """Return the stats as of now."""
        return await router_stats(
            self._ledger,
            self._guard,
            threshold=self._calibrator.threshold,
            now=datetime.now(UTC),
            window_hours=self._window_hours,
        )

    async def publish_stats_forever(self) -> None:
        """Publish the stats now, then after new decisions (at most once a second)."""
        while True:
            self._stats_due.clear()
            self._mqtt.set_retained(ROUTER_STATS.pattern, await self.stats(), qos=ROUTER_STATS.qos)
            await asyncio.sleep(STATS_MIN_INTERVAL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STATS_REFRESH_INTERVAL):
                    await self._stats_due.wait()
