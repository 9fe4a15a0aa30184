"""The orchestrator: step scheduling overhead, runs per second, recovery after SIGKILL.

Each part runs on SQLite (files in a temp data dir) and on PostgreSQL (a throwaway
database on 127.0.0.1:5432; skipped when none answers), side by side:

- steps: in this process, a real `DbosEngine` runs `--runs` 5-step `noop` runs
  (steps that sleep 0 s) one after another. Per step: the run's wall time from
  `create()` until its `succeeded` event, over 5 (this includes the DBOS queue
  picking the run up), and the time from the first step's start to the last
  step's end, over 5 (the engine between steps). Baseline: the `noop` executor
  itself, called directly 5 times with the same kind of `StepContext`. The ratio is
  the engine's time per step over the executor's.
- throughput: a real `python -m kittyai.orchestrator` process (log level info, as
  in production); `--throughput-runs` 5-step `noop` runs created at once through
  its HTTP API; runs per second from the first POST until every run succeeded.
  The template's quota (`--quota` runs at once) bounds the concurrency.
- recovery: the same process with `--recovery-runs` runs of 3 steps that sleep 2 s
  each, all in flight (quota as large); once every run has a step running, SIGKILL,
  restart on the same data dir and database, and time until `/health` answers and
  until every run has finished the step it was in (which runs again, as a new
  try). Polled every 20 ms.

    .venv/bin/python -m benchmarks.orchestrator_runs [--quick] [--runs 10]
        [--throughput-runs 100] [--quota 16] [--recovery-runs 8]
"""

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
import contextlib
from dataclasses import dataclass
import logging
from pathlib import Path
import statistics
import tempfile
import time
from typing import Any

import aiohttp
import psycopg

from kittyai.catalog import ServiceName
from kittyai.contract.orchestrator import (
    ArtifactInfo,
    ArtifactKind,
    CreateRunRequest,
    RunEventType,
    RunInfo,
    RunState,
    StepInfo,
    StepState,
)
from kittyai.orchestrator.database import Database
from kittyai.orchestrator.dbos_engine import DbosEngine
from kittyai.orchestrator.options import Policies, QuotaOptions
from kittyai.orchestrator.templates import shipped_templates
from kittyai.orchestrator.templates.base import Peers, StepContext
from kittyai.orchestrator.templates.noop import NoopParams, NoopTemplate, run_noop_step
from tests.helpers.postgres import POSTGRES_SERVER, throwaway_database
from tests.helpers.services import ServiceProcess

STEPS = 5
RECOVERY_STEPS = 3
RECOVERY_STEP_S = 2.0
POLL_S = 0.02
TIMEOUT_S = 300.0
SQLITE = "SQLite"
POSTGRES = "PostgreSQL"


@dataclass
class StepTiming:
    wall_ms_per_step: float
    between_ms_per_step: float
    direct_ms_per_step: float


@dataclass
class Recovery:
    health_s: float
    resumed_s: float


class _NoArtifacts:
    """The `noop` executor writes no artifact; the baseline needs a sink all the same."""

    async def write(
        self, name: str, data: bytes, *, kind: ArtifactKind, media_type: str
    ) -> ArtifactInfo:
        raise NotImplementedError

    async def read(self, artifact_id: str) -> bytes:
        raise NotImplementedError


def postgres_available() -> bool:
    try:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def database_url(name: str) -> Iterator[str | None]:
    """Yield the URL of an empty database: None is SQLite (in a fresh data dir)."""
    if name == SQLITE:
        yield None
        return
    with throwaway_database() as url:
        yield url


# Part 1: the engine in this process, against the executor called directly.


async def measure_steps(url: str | None, data_dir: Path, runs: int) -> StepTiming:
    async with aiohttp.ClientSession() as session:
        peers = Peers(
            session=session,
            supervisor=None,
            home_assistant=None,
            config_dir=data_dir / "homeassistant",
            cad=None,
            knowledge=None,
            policies=Policies(),
        )
        database = await Database.open(url, data_dir)
        engine = await DbosEngine.start(
            database, shipped_templates(), peers, data_dir, QuotaOptions()
        )
        try:
            await run_noop(engine)  # warm-up: DBOS's first workflow, SQL statements
            walls, betweens = [], []
            for _ in range(runs):
                started = time.perf_counter()
                run = await run_noop(engine)
                walls.append(time.perf_counter() - started)
                first, last = run.steps[0], run.steps[-1]
                assert first.started_at is not None
                assert last.finished_at is not None
                betweens.append((last.finished_at - first.started_at).total_seconds())
        finally:
            await engine.stop()
            await database.close()
        direct = await time_direct_executor(peers, runs)
    return StepTiming(
        wall_ms_per_step=statistics.median(walls) * 1000 / STEPS,
        between_ms_per_step=statistics.median(betweens) * 1000 / STEPS,
        direct_ms_per_step=direct * 1000 / STEPS,
    )


async def run_noop(engine: DbosEngine) -> RunInfo:
    """Create a 5-step noop run and return it once it succeeded."""
    run, _ = await engine.create(CreateRunRequest(template="noop", params={"steps": STEPS}))
    async for event in engine.events(run_id=run.id):
        if event.type is RunEventType.RUN and event.state.finished:
            assert event.state is RunState.SUCCEEDED, event
            return await engine.get(run.id)
    raise AssertionError("the engine stopped")


async def time_direct_executor(peers: Peers, runs: int) -> float:
    """Return the median seconds of 5 direct calls of the noop executor."""
    plan = await NoopTemplate().plan(NoopParams(steps=STEPS), peers)
    lines: list[str] = []

    async def log(line: str) -> None:
        lines.append(line)

    times = []
    for _ in range(runs + 1):
        results: dict[str, dict[str, Any]] = {}
        started = time.perf_counter()
        for index, spec in enumerate(plan):
            ctx = StepContext(
                run_id="r-000000000000",
                template="noop",
                params={"steps": STEPS},
                step=StepInfo(**spec.model_dump(), index=index, state=StepState.RUNNING),
                attempt=1,
                results=results,
                choice=None,
                peers=peers,
                artifacts=_NoArtifacts(),
                log=log,
            )
            results[spec.name] = await run_noop_step(ctx)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


# Parts 2 and 3: a real process, through its HTTP API.


def orchestrator(workdir: Path, url: str | None, quota: int) -> ServiceProcess:
    options: dict[str, Any] = {
        "log_level": "info",
        "quotas": {"runs_per_template": quota},
        "writes_per_minute": 100_000,
        "write_burst": 100_000,
    }
    if url is not None:
        options["database"] = {"url": url}
    return ServiceProcess(ServiceName.ORCHESTRATOR, workdir, mqtt_port=None, extra_options=options)


@contextlib.asynccontextmanager
async def api_session(process: ServiceProcess) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=64)
    headers = {"Authorization": f"Bearer {process.token}"}
    async with aiohttp.ClientSession(
        base_url=process.url, headers=headers, connector=connector
    ) as session:
        yield session


async def create(session: aiohttp.ClientSession, params: dict[str, Any]) -> str:
    async with session.post("/api/runs", json={"template": "noop", "params": params}) as answer:
        assert answer.status == 201, await answer.text()
        return str((await answer.json())["id"])


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the orchestrator did not get there in time")
        await asyncio.sleep(POLL_S)


async def count(session: aiohttp.ClientSession, state: RunState) -> int:
    async with session.get("/api/runs", params={"state": state.value, "limit": "1"}) as answer:
        return int((await answer.json())["total"])


async def measure_throughput(url: str | None, workdir: Path, runs: int, quota: int) -> float:
    process = orchestrator(workdir, url, quota)
    await asyncio.to_thread(process.start, 60)
    try:
        async with api_session(process) as session:
            # Warm-up: the first run, the first connections.
            await create(session, {"steps": STEPS})
            await until(lambda: _at_least(session, RunState.SUCCEEDED, 1))
            started = time.perf_counter()
            await asyncio.gather(*(create(session, {"steps": STEPS}) for _ in range(runs)))
            await until(lambda: _at_least(session, RunState.SUCCEEDED, runs + 1))
            return runs / (time.perf_counter() - started)
    finally:
        process.stop()


async def _at_least(session: aiohttp.ClientSession, state: RunState, wanted: int) -> bool:
    return await count(session, state) >= wanted


async def measure_recovery(url: str | None, workdir: Path, runs: int) -> Recovery:
    process = orchestrator(workdir, url, runs)
    await asyncio.to_thread(process.start, 60)
    try:
        async with api_session(process) as session:
            params = {"steps": RECOVERY_STEPS, "seconds": RECOVERY_STEP_S}
            run_ids = await asyncio.gather(*(create(session, params) for _ in range(runs)))
            running: dict[str, int] = {}

            async def all_running() -> bool:
                for run_id in run_ids:
                    steps = (await _run(session, run_id))["steps"]
                    now = [s["index"] for s in steps if s["state"] == StepState.RUNNING]
                    if not now:
                        return False
                    running[run_id] = now[0]
                return True

            await until(all_running)
        process.kill()
        started = time.perf_counter()
        # `start` polls /health every 100 ms; this polls it more often, alongside.
        restarting = asyncio.create_task(asyncio.to_thread(process.start, 60))
        async with api_session(process) as session:
            await until(lambda: _healthy(session))
            health_s = time.perf_counter() - started
            await restarting

            async def all_resumed() -> bool:
                for run_id, index in running.items():
                    step = (await _run(session, run_id))["steps"][index]
                    if step["state"] != StepState.SUCCEEDED:
                        return False
                return True

            await until(all_resumed)
            resumed_s = time.perf_counter() - started
        return Recovery(health_s=health_s, resumed_s=resumed_s)
    finally:
        process.stop()


async def _healthy(session: aiohttp.ClientSession) -> bool:
    try:
        async with session.get("/health", timeout=aiohttp.ClientTimeout(total=1)) as answer:
            return answer.status == 200
    except aiohttp.ClientError, TimeoutError:
        return False


async def _run(session: aiohttp.ClientSession, run_id: str) -> dict[str, Any]:
    async with session.get(f"/api/runs/{run_id}") as answer:
        return dict(await answer.json())


# The report.


def row(label: str, values: list[str]) -> str:
    return f"{label:38}" + "".join(f"{value:>14}" for value in values)


async def benchmark(args: argparse.Namespace, workdir: Path) -> None:
    names = [SQLITE]
    if postgres_available():
        names.append(POSTGRES)
    else:
        print(f"PostgreSQL: skipped (nothing answers at {POSTGRES_SERVER})")
    parts = set(args.parts.split(","))
    lines = [row("", names)]

    async def each[T](part: str, measure: Callable[[str | None, Path], Awaitable[T]]) -> list[T]:
        """Measure on each database, every time an empty one."""
        results = []
        for name in names:
            with database_url(name) as url:
                results.append(await measure(url, workdir / f"{part}-{name}"))
        return results

    if "steps" in parts:
        timings = await each("steps", lambda url, path: measure_steps(url, path, args.runs))
        lines += [
            row(
                f"run wall time ms/step ({args.runs} runs)",
                [f"{t.wall_ms_per_step:.2f}" for t in timings],
            ),
            row("first start→last end ms/step", [f"{t.between_ms_per_step:.2f}" for t in timings]),
            row("noop executor direct ms/step", [f"{t.direct_ms_per_step:.4f}" for t in timings]),
            row(
                "ratio engine/direct (between steps)",
                [f"{t.between_ms_per_step / t.direct_ms_per_step:.0f}" for t in timings],
            ),
        ]
    if "throughput" in parts:
        rates = await each(
            "throughput",
            lambda url, path: measure_throughput(url, path, args.throughput_runs, args.quota),
        )
        lines.append(
            row(
                f"runs/s ({args.throughput_runs} at once, quota {args.quota})",
                [f"{rate:.1f}" for rate in rates],
            )
        )
    if "recovery" in parts:
        recoveries = await each(
            "recovery", lambda url, path: measure_recovery(url, path, args.recovery_runs)
        )
        lines += [
            row(
                f"SIGKILL → /health s ({args.recovery_runs} in flight)",
                [f"{r.health_s:.2f}" for r in recoveries],
            ),
            row("SIGKILL → every run past its step s", [f"{r.resumed_s:.2f}" for r in recoveries]),
            row("  of which the re-run step (sleeps) s", [f"{RECOVERY_STEP_S:.2f}"] * len(names)),
        ]
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few runs")
    parser.add_argument("--parts", default="steps,throughput,recovery")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--throughput-runs", type=int, default=100)
    parser.add_argument("--quota", type=int, default=16)
    parser.add_argument("--recovery-runs", type=int, default=8)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.throughput_runs, args.recovery_runs = 2, 10, 2
    # DBOS and the engine log at info; the table is what this prints.
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(benchmark(args, Path(workdir)))


if __name__ == "__main__":
    main()
