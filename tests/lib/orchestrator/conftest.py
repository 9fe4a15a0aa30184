"""Fixtures for the orchestrator tests: databases (SQLite and PostgreSQL), the engine, a drill.

Every engine test runs on SQLite in the test's data dir and on a throwaway
PostgreSQL database. DBOS is process-global: `start_engine` launches it in the
test's event loop and the fixture stops (destroys) it before the database goes, so
the next test launches a fresh one.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
import logging
from pathlib import Path
import threading
from typing import Any, ClassVar

import aiohttp
import psycopg
from pydantic import BaseModel, ConfigDict, Field
import pytest
import pytest_asyncio

from kittyai.contract.orchestrator import (
    ApprovalGate,
    ArtifactKind,
    RetryPolicy,
    RunInfo,
    RunState,
    StepSpec,
)
from kittyai.orchestrator.database import Database
from kittyai.orchestrator.dbos_engine import DbosEngine
from kittyai.orchestrator.options import QuotaOptions
from kittyai.orchestrator.templates import shipped_templates
from kittyai.orchestrator.templates.base import (
    Peers,
    StepContext,
    StepExecutor,
    StepFailedError,
    Template,
)
from kittyai.orchestrator.workqueue import WorkQueue
from tests.helpers.net import loopback_sockets
from tests.helpers.orchestrator import peers_with
from tests.helpers.postgres import throwaway_database
from tests.helpers.services import ServiceProcess
from tests.lib.orchestrator.process import OrchestratorApi

# The HA harness logs every SQL statement (it sets `sqlalchemy.engine` to INFO);
# the run store's would bury the test output.
logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)

# Queued runs start, and waiting runs wake, this soon: tests wait less than a service.
POLL_S = 0.05
# For a test whose subject the database makes no difference to (validation, timeouts):
# it runs on SQLite only, keeping the suite quick.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
DRILL = "drill"


@pytest.fixture(autouse=True)
def configure_event_loop() -> None:
    """Keep the plain asyncio loop the orchestrator process runs on.

    Home Assistant's test plugin configures every test loop like Home Assistant's
    own, which forbids replacing the default executor; DBOS replaces it.
    """


def empty_postgres(url: str) -> None:
    """Delete every row of KITTY's and DBOS's tables, keeping the schema; restart the counters."""
    with psycopg.connect(url, autocommit=True) as connection:
        tables = connection.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
            " WHERE schemaname IN ('public', 'dbos') AND tablename <> 'dbos_migrations'"
        ).fetchall()
        if tables:
            listed = ", ".join(table for (table,) in tables)
            connection.execute(f"TRUNCATE {listed} RESTART IDENTITY CASCADE")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for the module's tests (a new one takes a second)."""
    with loopback_sockets(), throwaway_database() as url:
        yield url


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The orchestrator's data dir: SQLite files and artifacts."""
    return tmp_path / "data"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the data dir) or the URL of the module's PostgreSQL database, emptied."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    empty_postgres(url)
    return url


@pytest.fixture
async def database(database_url: str | None, data_dir: Path) -> AsyncIterator[Database]:
    """The orchestrator's database, open."""
    db = await Database.open(database_url, data_dir)
    yield db
    await db.close()


@pytest.fixture
def peers(session: aiohttp.ClientSession, tmp_path: Path) -> Peers:
    """No Supervisor, Home Assistant, CAD or knowledge: what `noop` and the drill need."""
    return peers_with(session, tmp_path / "homeassistant")


# --------------------------------------------------------------------------- the drill template


class DrillStepParams(BaseModel):
    """How one drill step behaves."""

    model_config = ConfigDict(extra="forbid")

    name: str
    # Tries 1..fail_tries fail (tries count over retries of the run too).
    fail_tries: int = 0
    retryable: bool = True
    attempts: int = 1
    backoff_s: float = 0.0
    timeout_s: float = 30.0
    undo: bool = True
    undo_fails: bool = False
    # Wait until the test releases the step (`Drill.release`).
    block: bool = False
    gate: bool = False
    choices: list[str] = Field(default_factory=list)
    artifact: str | None = None
    capability: str | None = None
    # Returned as `approval_choices`: what the next gate offers.
    offer: Any = None


class DrillParams(BaseModel):
    """A drill run: its steps."""

    model_config = ConfigDict(extra="forbid")

    steps: list[DrillStepParams] = Field(min_length=1)


@dataclass
class Drill:
    """A test-only template whose steps do what the test's params say, and record it."""

    name: ClassVar[str] = DRILL
    title: ClassVar[str] = "Test drill"
    params_model: ClassVar[type[BaseModel]] = DrillParams

    # (run id, step name, attempt) of every try that started, and of every undo.
    tries: list[tuple[str, str, int]] = field(default_factory=list)
    finished: list[tuple[str, str, int]] = field(default_factory=list)
    undone: list[tuple[str, str]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def plan(self, params: BaseModel, peers: Peers) -> list[StepSpec]:
        """One step per entry of `params.steps`."""
        drill = DrillParams.model_validate(params, from_attributes=True)
        return [
            StepSpec(
                name=step.name,
                kind="drill",
                title=f"Drill {step.name}",
                params=step.model_dump(),
                retry=RetryPolicy(attempts=step.attempts, backoff_s=step.backoff_s),
                timeout_s=step.timeout_s,
                compensation="drill.undo" if step.undo else None,
                approval=ApprovalGate(reason=f"Go on with {step.name}?", choices=step.choices)
                if step.gate
                else None,
                capability=step.capability,
            )
            for step in drill.steps
        ]

    @property
    def executors(self) -> Mapping[str, StepExecutor]:
        """The drill's step and undo."""
        return {"drill": self._run, "drill.undo": self._undo}

    async def _run(self, ctx: StepContext) -> dict[str, Any]:
        step = DrillStepParams.model_validate(ctx.step.params)
        self.tries.append((ctx.run_id, step.name, ctx.attempt))
        await ctx.log(f"{step.name} try {ctx.attempt}")
        if step.block:
            await self.release.wait()
        if ctx.attempt <= step.fail_tries:
            raise StepFailedError(f"{step.name} fails try {ctx.attempt}", retryable=step.retryable)
        result: dict[str, Any] = {"attempt": ctx.attempt, "choice": ctx.choice}
        if step.artifact is not None:
            info = await ctx.artifacts.write(
                step.artifact,
                f"made by {step.name}".encode(),
                kind=ArtifactKind.FILE,
                media_type="text/plain",
            )
            result["artifact"] = info.id
            result["read_back"] = (await ctx.artifacts.read(info.id)).decode()
        result["before"] = sorted(ctx.results)
        if step.offer is not None:
            result["approval_choices"] = step.offer
        self.finished.append((ctx.run_id, step.name, ctx.attempt))
        return result

    async def _undo(self, ctx: StepContext) -> dict[str, Any]:
        step = DrillStepParams.model_validate(ctx.step.params)
        self.undone.append((ctx.run_id, step.name))
        if step.undo_fails:
            raise StepFailedError(f"cannot undo {step.name}", retryable=False)
        assert step.name in ctx.results, "an undo sees the result of its step"
        return {}


def drill_steps(*steps: dict[str, Any]) -> dict[str, Any]:
    """Return drill params for `steps` (each a DrillStepParams dict)."""
    return {"steps": list(steps)}


# --------------------------------------------------------------------------- the engine


@dataclass
class EngineStarter:
    """Starts engines on the test's database; `stop` or the fixture's end stops them."""

    database: Database
    peers: Peers
    data_dir: Path
    drill: Drill
    running: list[DbosEngine] = field(default_factory=list)
    # What ran before: `close` waits for the threads and tasks the engines left.
    threads: set[threading.Thread] = field(default_factory=lambda: set(threading.enumerate()))

    async def start(
        self,
        *,
        quotas: QuotaOptions | None = None,
        templates: Mapping[str, Template] | None = None,
        work_queue: WorkQueue | None = None,
    ) -> DbosEngine:
        """Launch an engine with the shipped templates and the drill."""
        engine = await DbosEngine.start(
            self.database,
            templates if templates is not None else {**shipped_templates(), DRILL: self.drill},
            self.peers,
            self.data_dir,
            quotas or QuotaOptions(),
            work_queue=work_queue,
            poll_s=POLL_S,
        )
        self.running.append(engine)
        return engine

    async def stop(self, engine: DbosEngine) -> None:
        """Stop `engine` as a shutdown would: its runs resume at the next start."""
        self.running.remove(engine)
        await engine.stop()

    async def close(self) -> None:
        """Stop every engine still running and wait until DBOS has wound down."""
        for engine in list(self.running):
            await self.stop(engine)
        # DBOS shuts its executor down without waiting: its threads end with their last
        # job, and a workflow DBOS was starting then ends on the loop right after.
        tasks = asyncio.all_tasks()
        for _ in range(1000):
            if not any(
                thread.is_alive() and not thread.name.startswith("asyncio")
                for thread in set(threading.enumerate()) - self.threads
            ) and not (asyncio.all_tasks() - tasks):
                return
            await asyncio.sleep(0.01)


@pytest.fixture
def drill() -> Drill:
    """The test-only drill template."""
    return Drill()


@pytest.fixture
async def engines(
    database: Database, peers: Peers, data_dir: Path, drill: Drill
) -> AsyncIterator[EngineStarter]:
    """Start engines; every one still running is stopped at the end."""
    starter = EngineStarter(database=database, peers=peers, data_dir=data_dir, drill=drill)
    yield starter
    await starter.close()


@pytest.fixture
async def engine(engines: EngineStarter) -> DbosEngine:
    """An engine with the default quotas."""
    return await engines.start()


@pytest_asyncio.fixture(loop_scope="module")
async def api(orchestrator: ServiceProcess) -> AsyncIterator[OrchestratorApi]:
    """A client of the module's `orchestrator` process (a module-scoped fixture)."""
    async with aiohttp.ClientSession() as session:
        yield OrchestratorApi(orchestrator, session)


async def wait_for_run(
    engine: DbosEngine,
    run_id: str,
    *states: RunState,
    timeout: float = 20.0,  # noqa: ASYNC109
) -> RunInfo:
    """Return the run once it is in one of `states` (default: any finished state)."""
    wanted = set(states) or {state for state in RunState if state.finished}
    async with asyncio.timeout(timeout):
        while True:
            run = await engine.get(run_id)
            if run.state in wanted:
                return run
            await asyncio.sleep(0.02)
