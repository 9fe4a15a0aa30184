"""KITTY router: the local-first confidence router with an OpenAI-compatible API."""

import asyncio

from kittyai.catalog import ServiceName
from kittyai.embedding import MiniLMEmbedder
from kittyai.router.api import RouterApi
from kittyai.router.backends import create_backend
from kittyai.router.budgets import BudgetGuard
from kittyai.router.cache import AnswerCache
from kittyai.router.calibration import ThresholdCalibrator
from kittyai.router.engine import RoutingEngine
from kittyai.router.ledger import DecisionLedger
from kittyai.router.options import RouterOptions
from kittyai.router.telemetry import RouterTelemetry
from kittyai.service import Service, ServiceRuntime


async def setup(runtime: ServiceRuntime[RouterOptions]) -> None:
    """Open the ledger and the cache, connect the backends and serve the API."""
    options = runtime.options
    ledger = await DecisionLedger.open(runtime.data_dir / "decisions.sqlite3")
    runtime.on_stop(ledger.close)
    embedder = await asyncio.to_thread(MiniLMEmbedder.load)
    cache = None
    if options.cache.enabled:
        cache = await AnswerCache.open(
            runtime.data_dir / "cache.sqlite3",
            options.cache,
            embedder if options.cache.semantic else None,
        )
        runtime.on_stop(cache.close)
    guard = BudgetGuard(ledger, options.budgets)
    calibrator = ThresholdCalibrator(options.routing)
    # The threshold is derived from the log, so a restart resumes where it was.
    await calibrator.recalibrate(ledger)
    telemetry = RouterTelemetry(
        mqtt=runtime.mqtt,
        registry=runtime.metrics,
        ledger=ledger,
        guard=guard,
        calibrator=calibrator,
        window_hours=options.routing.stats_window_hours,
    )
    backends = {
        backend.name: create_backend(backend, runtime.session) for backend in options.backends
    }
    engine = RoutingEngine(
        options=options,
        backends=backends,
        ledger=ledger,
        guard=guard,
        calibrator=calibrator,
        cache=cache,
        on_decision=telemetry.on_decision,
    )
    RouterApi(
        options=options,
        engine=engine,
        telemetry=telemetry,
        ledger=ledger,
        embedder=embedder,
        backends=backends,
    ).add_routes(runtime.app)
    runtime.create_background_task(telemetry.publish_stats_forever(), "stats")


SERVICE = Service(
    name=ServiceName.ROUTER, options_model=RouterOptions, setup=setup, announce_discovery=True
)
