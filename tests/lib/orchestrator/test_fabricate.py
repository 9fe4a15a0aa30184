"""`fabricate`: its parameters and plan, and its CAD and memory steps against the real services.

The CAD service (real CadQuery and PrusaSlicer, its model a FakeOpenAI that reads
prompts as box coupons) and the knowledge service run as the real processes. The
design, choice and slice steps run in the real engine, in a template that plans
the first three steps of a fabricate run: printing needs Home Assistant and a
printer, which `tests/integration/test_fabricate_run.py` brings.
"""

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
import json
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
from pydantic import BaseModel
import pytest

from kittyai.cad_client import CadClient
from kittyai.catalog import ServiceName
from kittyai.contract.orchestrator import (
    ApprovalRequest,
    ArtifactKind,
    CreateRunRequest,
    Decision,
    RunErrorCode,
    RunInfo,
    RunState,
    StepInfo,
    StepState,
)
from kittyai.contract.rag import ArtifactKind as LinkKind, NoteRequest
from kittyai.orchestrator.artifacts import ArtifactStore
from kittyai.orchestrator.database import Database
from kittyai.orchestrator.dbos_engine import DbosEngine
from kittyai.orchestrator.engine import RunError
from kittyai.orchestrator.home_assistant import HomeAssistantClient
from kittyai.orchestrator.store import NewRun, RunStore
from kittyai.orchestrator.templates.base import Peers, StepContext
from kittyai.orchestrator.templates.fabricate import (
    FabricateParams,
    FabricateTemplate,
    Printer,
    fabricate_steps,
    record,
)
from kittyai.rag_client import RagClient
from tests.helpers.fake_llm import FakeOpenAI, ScriptedReply
from tests.helpers.net import free_port, loopback_sockets
from tests.helpers.orchestrator import peers_with
from tests.helpers.services import ServiceProcess
from tests.integration.common import served
from tests.lib.cad.conftest import start_cad_service
from tests.lib.orchestrator.conftest import Drill, EngineStarter, wait_for_run

CAD_MODEL_KEY = "sk-fabricate-cad-0123456789"
RAG_TOKEN = "fabricate-rag-token-0123456789"
COUPON = "a 20 x 20 mm test coupon"
# The model reads the coupon as 5 mm high, and as 8 mm high when asked for another reading.
HEIGHTS = {1: 5, 2: 8}
PRINTER = Printer(
    device_id="0123456789abcdef0123456789abcdef",
    name="Workshop MK4",
    state_entity="sensor.workshop_mk4_state",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The CAD service makes and slices each variant in a few seconds; a busy machine is slower.
RUN_TIMEOUT_S = 180.0


@pytest.fixture
def database_url() -> None:
    """SQLite only: the engine's databases have their own tests; this is about the template."""


@pytest.fixture(scope="module")
def cad_model() -> Iterator[FakeOpenAI]:
    """The CAD service's model: every prompt is a box coupon, its height by variant."""
    fake = FakeOpenAI(api_key=CAD_MODEL_KEY)
    fake.respond_with(reads_coupon)
    yield from served(fake)


def reads_coupon(body: dict[str, Any]) -> ScriptedReply:
    """Answer the box coupon, 8 mm high for the second variant, 5 mm for the first."""
    prompt = body["messages"][-1]["content"]
    variant = 2 if "This is variant 2" in prompt else 1
    parameters = {"length": 20, "width": 20, "height": HEIGHTS[variant]}
    return ScriptedReply(json.dumps({"family": "box", "parameters": parameters}))


def model_options(fake: FakeOpenAI) -> dict[str, Any]:
    """Return the CAD service's `model` option for `fake`."""
    return {"url": fake.url, "api_key": CAD_MODEL_KEY, "model": "gpt-5-mini"}


@pytest.fixture(scope="module")
def cad(
    tmp_path_factory: pytest.TempPathFactory, cad_model: FakeOpenAI
) -> Iterator[ServiceProcess]:
    """The real CAD service of the module, slicing with PrusaSlicer."""
    process = start_cad_service(tmp_path_factory.mktemp("cad"), model=model_options(cad_model))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The real knowledge service of the module, without a model."""
    workdir = tmp_path_factory.mktemp("rag")
    (workdir / "share").mkdir()
    with loopback_sockets():
        process = ServiceProcess(
            ServiceName.RAG,
            workdir,
            mqtt_port=None,
            token=RAG_TOKEN,
            extra_options={"share_dir": str(workdir / "share"), "watch": False},
        )
        process.start(timeout=60)
    yield process
    process.stop()


def cad_client(session: aiohttp.ClientSession, cad: ServiceProcess) -> CadClient:
    """Return the client the orchestrator reaches the CAD service with."""
    return CadClient(session, cad.url, cad.token)


def unreachable_home_assistant(session: aiohttp.ClientSession) -> HomeAssistantClient:
    """Return a client for a Home Assistant that does not answer: nothing listens there."""
    return HomeAssistantClient(session, f"http://127.0.0.1:{free_port()}", "ha-token-0123456789")


class CadSteps(FabricateTemplate):
    """Fabricate's design, choice and slice, for a printer that is never asked."""

    name: ClassVar[str] = "fabricate"

    async def plan(self, params: BaseModel, peers: Peers) -> list[Any]:
        """Plan a fabricate run's first three steps."""
        assert isinstance(params, FabricateParams)
        return fabricate_steps(params, PRINTER)[:3]


@pytest.fixture
async def cad_engine(
    database: Database,
    data_dir: Path,
    session: aiohttp.ClientSession,
    cad: ServiceProcess,
    tmp_path: Path,
) -> AsyncIterator[DbosEngine]:
    """The real engine running CadSteps against the module's CAD service."""
    async with cad_steps_engine(
        database,
        data_dir,
        peers_with(session, tmp_path / "homeassistant", cad=cad_client(session, cad)),
    ) as engine:
        yield engine


@asynccontextmanager
async def cad_steps_engine(
    database: Database, data_dir: Path, peers: Peers
) -> AsyncIterator[DbosEngine]:
    """Run the real engine with CadSteps as its only template."""
    starter = EngineStarter(database=database, peers=peers, data_dir=data_dir, drill=Drill())
    engine = await starter.start(templates={CadSteps.name: CadSteps()})
    yield engine
    await starter.stop(engine)


async def create(engine: DbosEngine, **params: Any) -> RunInfo:
    """Create a fabricate run with `params` and the test printer."""
    run, created = await engine.create(
        CreateRunRequest(template="fabricate", params={"printer": PRINTER.state_entity, **params})
    )
    assert created
    return run


async def approve(engine: DbosEngine, run: RunInfo, choice: str | None = None) -> RunInfo:
    """Approve the run's gate as Ada, picking `choice`."""
    return await engine.decide(
        run.id, ApprovalRequest(decision=Decision.APPROVE, approver="ada", choice=choice)
    )


def step(run: RunInfo, name: str) -> StepInfo:
    """Return the run's step named `name`."""
    return next(item for item in run.steps if item.name == name)


def result(run: RunInfo, name: str) -> dict[str, Any]:
    """Return the result of the run's step named `name`."""
    found = step(run, name).result
    assert found is not None, step(run, name)
    return found


# Parameters and plan.


@pytest.mark.parametrize(
    ("params", "variants"),
    [
        ({"description": COUPON}, 3),
        ({"description": COUPON, "family": "box", "variants": 2}, 2),
        ({"family": "box", "parameters": {"length": 20}}, 1),
    ],
)
def test_variants_default_to_three_readings_of_words(params: dict[str, Any], variants: int) -> None:
    """Words are read three ways unless told otherwise; a part given by parameters once."""
    parsed = FabricateParams.model_validate({"printer": PRINTER.state_entity, **params})

    assert parsed.variants == variants
    assert parsed.generate_request().variants == variants
    assert parsed.generate_request().slice is True


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({}, "give a description or a family"),
        ({"family": "box", "variants": 2}, "more than one variant needs a description"),
        ({"description": COUPON, "parameters": {"height": 5}}, "parameters need a family"),
        ({"description": COUPON, "variants": 5}, "variants"),
        ({"description": COUPON, "printer": "the big one"}, "printer"),
        ({"description": COUPON, "project": "Coupon Tests"}, "project"),
        ({"description": COUPON, "material": "wood"}, "material"),
    ],
)
async def test_invalid_parameters_are_refused(
    cad_engine: DbosEngine, params: dict[str, Any], problem: str
) -> None:
    """A run that says nothing makeable, or names things wrongly, is refused; nothing is kept."""
    with pytest.raises(RunError) as refused:
        await create(cad_engine, **params)

    assert refused.value.code is RunErrorCode.INVALID_PARAMS
    assert problem in refused.value.message
    assert (await cad_engine.list()).total == 0


@pytest.mark.parametrize(
    ("configured", "params", "problem"),
    [
        (set(), {}, "fabricate needs the CAD service"),
        ({"cad"}, {}, "fabricate prints through Home Assistant"),
        ({"cad", "home_assistant"}, {"project": "coupons"}, "project needs the knowledge service"),
        ({"cad", "home_assistant", "knowledge"}, {}, "cannot look up the printer"),
    ],
)
async def test_a_run_without_its_peers_is_refused(
    session: aiohttp.ClientSession,
    cad: ServiceProcess,
    tmp_path: Path,
    *,
    configured: set[str],
    params: dict[str, Any],
    problem: str,
) -> None:
    """Without the CAD service, Home Assistant or (for a project) the knowledge service: refused.

    The last Home Assistant does not answer: the printer cannot be looked up.
    """
    available = {
        "cad": cad_client(session, cad),
        "home_assistant": unreachable_home_assistant(session),
        "knowledge": RagClient(session, f"http://127.0.0.1:{free_port()}", RAG_TOKEN),
    }
    parsed = FabricateParams.model_validate(
        {"description": COUPON, "printer": PRINTER.state_entity, **params}
    )

    with pytest.raises(RunError) as refused:
        await FabricateTemplate().plan(
            parsed,
            peers_with(
                session,
                tmp_path / "homeassistant",
                **{name: available[name] for name in configured},
            ),
        )

    assert refused.value.code is RunErrorCode.TEMPLATE_UNAVAILABLE
    assert problem in refused.value.message


# Design, choice and slice.


async def test_variants_are_designed_picked_and_sliced(
    cad_engine: DbosEngine, session: aiohttp.ClientSession, cad: ServiceProcess
) -> None:
    """Two readings of the words become two sliced parts; the human's pick is the one sliced."""
    run = await create(cad_engine, description=COUPON, family="box", variants=2)

    run = await wait_for_run(cad_engine, run.id, RunState.AWAITING_APPROVAL, timeout=RUN_TIMEOUT_S)

    designed = result(run, "design")
    variants = designed["variants"]
    assert [variant["number"] for variant in variants] == [1, 2]
    assert [variant["bbox_mm"] for variant in variants] == [
        pytest.approx([20, 20, HEIGHTS[1]], abs=1e-3),
        pytest.approx([20, 20, HEIGHTS[2]], abs=1e-3),
    ]
    assert variants[1]["volume_mm3"] == pytest.approx(20 * 20 * HEIGHTS[2], rel=1e-3)
    assert all(variant["sliced"] and variant["print_time_s"] > 0 for variant in variants)
    ids = [variant["artifact_id"] for variant in variants]
    # The variants are what the gate offers, and what the stats show the human.
    gate = step(run, "choose").approval
    assert gate is not None
    assert gate.choices == ids
    assert (await cad_engine.stats()).awaiting_approval[0].choices == ids
    # The CAD service keeps the run's parts under the run's id.
    parts = await cad_client(session, cad).artifacts(conversation_id=run.id)
    assert sorted(part.id for part in parts) == sorted(ids)

    artifacts = {artifact.name: artifact for artifact in await cad_engine.artifacts(run.id)}
    assert {"variant-1-preview.png", "variant-2-preview.png"} <= set(artifacts)
    assert {"variant-1.stl", "variant-2.stl"} <= set(artifacts)
    preview = artifacts["variant-2-preview.png"]
    assert (preview.kind, preview.media_type) == (ArtifactKind.CAD, "image/png")
    assert variants[1]["preview"] == preview.id
    _info, path = await cad_engine.artifact_file(run.id, preview.id)
    assert path.read_bytes().startswith(PNG_MAGIC)

    await approve(cad_engine, run, choice=ids[1])
    run = await wait_for_run(cad_engine, run.id, RunState.SUCCEEDED, timeout=RUN_TIMEOUT_S)

    assert result(run, "choose") == {"artifact_id": ids[1], "number": 2, "picked": True}
    sliced = result(run, "slice")
    part = await cad_client(session, cad).artifact(ids[1])
    assert part.slice is not None
    assert sliced["artifact_id"] == ids[1]
    assert sliced["gcode"] == "part.gcode"
    assert sliced["print_time_s"] == part.slice.print_time_s
    assert sliced["filament_g"] == part.slice.filament_g
    gcode = next(file for file in part.files if file.name == "part.gcode")
    assert (sliced["gcode_size"], sliced["gcode_sha256"]) == (gcode.size, gcode.sha256)
    [estimate] = [a for a in await cad_engine.artifacts(run.id) if a.name == "slice.json"]
    _info, path = await cad_engine.artifact_file(run.id, estimate.id)
    assert json.loads(path.read_text()) == sliced


async def test_a_single_part_is_approved_without_a_choice(cad_engine: DbosEngine) -> None:
    """A part given by its parameters is made once: the human approves it, there is no pick."""
    run = await create(
        cad_engine, family="box", parameters={"length": 30, "width": 20, "height": 4}
    )
    run = await wait_for_run(cad_engine, run.id, RunState.AWAITING_APPROVAL, timeout=RUN_TIMEOUT_S)

    gate = step(run, "choose").approval
    assert gate is not None
    assert gate.choices == []
    assert gate.reason == f"Approve a box to print on {PRINTER.name}"
    [variant] = result(run, "design")["variants"]

    await approve(cad_engine, run)
    run = await wait_for_run(cad_engine, run.id, RunState.SUCCEEDED, timeout=RUN_TIMEOUT_S)

    assert result(run, "choose")["artifact_id"] == variant["artifact_id"]
    assert result(run, "choose")["picked"] is False
    assert result(run, "slice")["artifact_id"] == variant["artifact_id"]


async def test_a_part_the_cad_service_refuses_fails_at_once(cad_engine: DbosEngine) -> None:
    """An unknown family is refused by the CAD service: one try, nothing to undo, no gate."""
    run = await create(cad_engine, family="spaceship")

    run = await wait_for_run(cad_engine, run.id, timeout=RUN_TIMEOUT_S)

    assert run.state is RunState.FAILED
    design = step(run, "design")
    assert (design.state, design.attempts) == (StepState.FAILED, 1)
    assert design.message is not None
    assert "the CAD service refused to design the part" in design.message
    assert "spaceship" in design.message
    assert [item.state for item in run.steps[1:]] == [StepState.SKIPPED, StepState.SKIPPED]
    [log] = [a for a in await cad_engine.artifacts(run.id) if a.kind is ArtifactKind.ROLLBACK_LOG]
    _info, path = await cad_engine.artifact_file(run.id, log.id)
    assert "Nothing needed undoing" in path.read_text()


@pytest.fixture
async def unslicing_engine(
    database: Database,
    data_dir: Path,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    cad_model: FakeOpenAI,
) -> AsyncIterator[DbosEngine]:
    """The engine with a CAD service whose slicer is not installed."""
    process = start_cad_service(
        tmp_path / "cad",
        model=model_options(cad_model),
        slicer_command=str(tmp_path / "no-prusa-slicer"),
    )
    async with cad_steps_engine(
        database,
        data_dir,
        peers_with(session, tmp_path / "homeassistant", cad=cad_client(session, process)),
    ) as engine:
        yield engine
    process.stop()


async def test_parts_without_gcode_are_not_offered(unslicing_engine: DbosEngine) -> None:
    """Without a slicer the parts are made but cannot print: the run fails before the gate."""
    run = await create(unslicing_engine, description=COUPON, family="box", variants=2)

    run = await wait_for_run(unslicing_engine, run.id, timeout=RUN_TIMEOUT_S)

    assert run.state is RunState.FAILED
    design = step(run, "design")
    assert design.state is StepState.FAILED
    assert design.message is not None
    assert "no variant could be sliced (variant 1: " in design.message
    assert "variant 2: " in design.message
    # The parts themselves were made and kept for a look.
    names = {artifact.name for artifact in await unslicing_engine.artifacts(run.id)}
    assert {"variant-1-preview.png", "variant-2-preview.png"} <= names


# Record.


async def test_the_print_is_recorded_once_with_its_links(
    database: Database, data_dir: Path, session: aiohttp.ClientSession, rag: ServiceProcess
) -> None:
    """The note says what was made and printed; a try run again adds no second note.

    A note of a failed try before does not count as the note of the print.
    """
    knowledge = RagClient(session, rag.url, RAG_TOKEN)
    params = FabricateParams(
        description=COUPON,
        family="box",
        variants=2,
        printer=PRINTER.state_entity,
        project="coupon-tests",
    )
    steps = fabricate_steps(params, PRINTER)
    store = await RunStore.open(database, lambda: None)
    run, _created = await store.create_run(
        NewRun(
            template="fabricate",
            params=params.model_dump(mode="json"),
            steps=steps,
            requested_by="ada",
            idempotency_key=None,
            correlation_id=None,
        )
    )
    index = len(steps) - 1
    results = printed_coupon_results()
    logged: list[str] = []

    async def log(line: str) -> None:
        logged.append(line)

    context = StepContext(
        run_id=run.id,
        template="fabricate",
        params=params.model_dump(mode="json"),
        step=run.steps[index],
        attempt=1,
        results=results,
        choice=None,
        peers=peers_with(session, data_dir / "homeassistant", knowledge=knowledge),
        artifacts=ArtifactStore(data_dir, store).sink(run.id, index),
        log=log,
    )

    # An earlier try of the print failed, and said so in the project.
    failed = f"Print failed (run {run.id}): variant 2, part p-2: the printer ended error."
    await knowledge.add_note("coupon-tests", NoteRequest(text=failed, author="KITTY orchestrator"))

    recorded = await record(context)
    await record(context)

    detail = await knowledge.project("coupon-tests")
    earlier, note = detail.notes
    assert earlier.text == failed
    assert note.author == "KITTY orchestrator"
    assert note.text.startswith(f"Printed (run {run.id}): {COUPON}. Variant 2 of 2, part p-2:")
    made = 'box {"height": 8, "length": 20, "width": 20}, 20 \u00d7 20 \u00d7 8 mm, 3200 mm\u00b3.'
    assert made in note.text
    assert "PLA on Workshop MK4 (profile generic): estimated 12 min and 1.5 g" in note.text
    assert note.text.endswith("complete after 13 min.")
    links = {(link.kind, link.ref) for link in detail.artifacts}
    assert links == {
        (LinkKind.CAD, "p-2"),
        (LinkKind.PRINT, f"{PRINTER.device_id}/kitty-p-2.gcode"),
        (LinkKind.RUN, run.id),
    }
    assert recorded["project"] == "coupon-tests"
    assert logged == ["recorded in project coupon-tests"] * 2


def printed_coupon_results() -> dict[str, dict[str, Any]]:
    """Return what the steps before `record` found for a coupon printed as variant 2."""
    variants = [
        {
            "artifact_id": f"p-{number}",
            "number": number,
            "provider": "parametric",
            "family": "box",
            "parameters": {"length": 20, "width": 20, "height": height},
            "bbox_mm": [20, 20, height],
            "volume_mm3": 400.0 * height,
            "mass_g": 0.5 * height,
            "sliced": True,
            "print_time_s": 720.0,
            "filament_g": 1.5,
            "preview": None,
        }
        for number, height in HEIGHTS.items()
    ]
    return {
        "design": {"job_id": "j-1", "variants": variants, "printable": ["p-1", "p-2"]},
        "choose": {"artifact_id": "p-2", "number": 2, "picked": True},
        "slice": {
            "artifact_id": "p-2",
            "printer": "generic",
            "material": "pla",
            "print_time_s": 720.0,
            "filament_g": 1.5,
        },
        "print": {**PRINTER.model_dump(), "file": "kitty-p-2.gcode", "artifact_id": "p-2"},
        "watch": {"state": "complete", "duration_s": 780.0},
    }
