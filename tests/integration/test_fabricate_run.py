"""A `fabricate` run from words to a printed part, through Home Assistant: all real.

The orchestrator process calls Home Assistant's HTTP API (the test's HA, served on
127.0.0.1 with an administrator's token) to find the printer, start the print and
follow it; KITTY in HA prints on OctoPrint's Virtual Printer with the G-code the
real CAD service sliced; the real knowledge service keeps the project's memory. The
runs are created and decided with KITTY's actions, as a user or an automation does.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
import json
from pathlib import Path
from typing import Any

import aiohttp
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.kitty.const import DOMAIN
from custom_components.kitty.printer_coordinator import PrinterCoordinator
from kittyai.cad_client import CadClient
from kittyai.catalog import ServiceName
from kittyai.contract.cad import GenerateRequest
from kittyai.contract.orchestrator import ArtifactKind, RunInfo, RunState, StepState
from kittyai.contract.rag import ArtifactKind as LinkKind
from kittyai.orchestrator.artifacts import ArtifactStore
from kittyai.orchestrator.database import Database
from kittyai.orchestrator.home_assistant import HomeAssistantClient
from kittyai.orchestrator.store import NewRun, RunStore
from kittyai.orchestrator.templates.base import StepContext
from kittyai.orchestrator.templates.fabricate import (
    FabricateParams,
    cancel_print,
    fabricate_steps,
    find_printer,
)
from kittyai.orchestrator_client import OrchestratorClient
from kittyai.rag_client import RagClient
from tests.helpers.broker import MosquittoBroker
from tests.helpers.fake_llm import FakeOpenAI, ScriptedReply
from tests.helpers.net import free_port
from tests.helpers.octoprint import OctoPrintServer
from tests.helpers.orchestrator import peers_with, wait_for_run
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    ORCHESTRATOR_TOKEN,
    cad_options,
    orchestrator_options,
    run_cad,
    run_rag,
    set_up_kitty,
)
from tests.integration.test_printer_octoprint import (
    add_octoprint,
    entity_id,
    job,
    octoprint_files,
)

# The orchestrator reaches HA at its port in every test.
pytestmark = pytest.mark.usefixtures("home_assistant_api")

PROJECT = "coupon-tests"
COUPON_PROMPT = "a 20 \u00d7 20 mm test coupon"
# A coupon given by its parameters: one part, no model asked.
COUPON = {"length": 20, "width": 20, "height": 2}
# The CAD service's model reads the coupon as 5 mm high, and 3 mm for another reading.
HEIGHTS = {1: 5, 2: 3}
# Two parts made and sliced; then a print on the Virtual Printer, which heats up for real.
DESIGN_WAIT_S = 180.0
PRINT_WAIT_S = 600.0


@pytest.fixture(scope="module")
def cad(
    tmp_path_factory: pytest.TempPathFactory, cad_model: FakeOpenAI
) -> Iterator[ServiceProcess]:
    """The real CAD service of the module; the orchestrator and HA both ask it."""
    yield from run_cad(tmp_path_factory.mktemp("cad"), mqtt_port=None, model=cad_model)


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The real knowledge service of the module, holding the projects."""
    workdir = tmp_path_factory.mktemp("rag")
    (workdir / "share").mkdir()
    yield from run_rag(workdir, mqtt_port=None, share=workdir / "share")


@pytest.fixture
def reads_coupons(cad_model: FakeOpenAI) -> None:
    """Make the CAD service's model read every prompt as the coupon, its height by variant."""

    def answer(body: dict[str, Any]) -> ScriptedReply:
        prompt = body["messages"][-1]["content"]
        variant = 2 if "This is variant 2" in prompt else 1
        parameters = {"length": 20, "width": 20, "height": HEIGHTS[variant]}
        return ScriptedReply(json.dumps({"family": "box", "parameters": parameters}))

    cad_model.requests.clear()
    cad_model.respond_with(answer)


@pytest.fixture
def home_assistant_port() -> int:
    """Return the port HA's HTTP API will answer on."""
    return free_port()


@pytest.fixture
async def orchestrator(
    tmp_path: Path,
    home_assistant_port: int,
    hass_access_token: str,
    mqtt_broker: MosquittoBroker,
    *,
    cad: ServiceProcess,
    rag: ServiceProcess,
) -> AsyncIterator[ServiceProcess]:
    """The real orchestrator, reaching this test's HA with an administrator's token."""
    process = ServiceProcess(
        ServiceName.ORCHESTRATOR,
        tmp_path,
        mqtt_port=mqtt_broker.port,
        token=ORCHESTRATOR_TOKEN,
        extra_options={
            "home_assistant": {
                "url": f"http://127.0.0.1:{home_assistant_port}",
                "token": hass_access_token,
            },
            "cad": {"url": cad.url, "token": cad.token},
            "knowledge": {"url": rag.url, "token": rag.token},
        },
    )
    await asyncio.to_thread(process.start, 60)
    yield process
    process.stop()


@pytest.fixture
async def printer(
    hass: HomeAssistant,
    *,
    router: ServiceProcess,
    cad: ServiceProcess,
    orchestrator: ServiceProcess,
    mqtt_entry: MockConfigEntry,
    idle_octoprint: OctoPrintServer,
    config_dir: Path,
) -> PrinterCoordinator:
    """KITTY with the CAD service, the orchestrator and the OctoPrint printer."""
    entry = await set_up_kitty(
        hass, router, options={**cad_options(cad), **orchestrator_options(orchestrator)}
    )
    return await add_octoprint(hass, entry, idle_octoprint)


@pytest.fixture
async def home_assistant_api(
    hass: HomeAssistant,
    aiohttp_client: ClientSessionGenerator,
    home_assistant_port: int,
    printer: PrinterCoordinator,
) -> None:
    """Serve HA's REST API on its port, as an installed Home Assistant does.

    It starts once KITTY and its printer are set up: the server's routes are fixed
    when it starts, and MQTT and KITTY add theirs while they set up.
    """
    assert await async_setup_component(hass, "api", {})
    await aiohttp_client(
        hass.http.app, server_kwargs={"host": "127.0.0.1", "port": home_assistant_port}
    )


@pytest.fixture
async def runs(orchestrator: ServiceProcess) -> AsyncIterator[OrchestratorClient]:
    """The orchestrator's API, to follow the runs the test makes."""
    async with aiohttp.ClientSession() as session:
        yield OrchestratorClient(session, orchestrator.url, orchestrator.token)


@pytest.fixture
async def knowledge(rag: ServiceProcess) -> AsyncIterator[RagClient]:
    """The knowledge service's API, to read the project's memory."""
    async with aiohttp.ClientSession() as session:
        yield RagClient(session, rag.url, rag.token)


async def action(hass: HomeAssistant, service: str, **data: Any) -> dict[str, Any]:
    """Call one of KITTY's run actions as an automation does; return its response."""
    response = await hass.services.async_call(
        DOMAIN, service, data, blocking=True, return_response=True
    )
    assert response is not None
    return dict(response)


async def wait_for_step(
    runs: OrchestratorClient, run_id: str, name: str, state: StepState
) -> RunInfo:
    """Return the run once its step `name` is in `state`; fail if the run ends first."""
    async with asyncio.timeout(DESIGN_WAIT_S):
        while True:
            run = await runs.run(run_id)
            if step_states(run)[name] is state:
                return run
            assert not run.state.finished, run
            await asyncio.sleep(0.1)


def step_states(run: RunInfo) -> dict[str, StepState]:
    """Return each step's state, by name."""
    return {step.name: step.state for step in run.steps}


def result(run: RunInfo, name: str) -> dict[str, Any]:
    """Return the result of the run's step `name`."""
    [found] = [step.result for step in run.steps if step.name == name]
    assert found is not None, name
    return found


@pytest.mark.slow
@pytest.mark.usefixtures("reads_coupons")
async def test_words_become_a_printed_part_remembered_in_the_project(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    runs: OrchestratorClient,
    knowledge: RagClient,
) -> None:
    """The acceptance test: two variants, the human picks the second, it prints to the end."""
    state_sensor = entity_id(hass, printer, "sensor", "state")

    created = await action(
        hass,
        "create_run",
        template="fabricate",
        params={
            "description": COUPON_PROMPT,
            "family": "box",
            "variants": 2,
            "printer": state_sensor,
            "project": PROJECT,
        },
    )

    assert created["state"] == RunState.QUEUED
    run_id = created["run_id"]
    run = await wait_for_run(runs, run_id, RunState.AWAITING_APPROVAL, DESIGN_WAIT_S)
    variants = result(run, "design")["variants"]
    assert [variant["bbox_mm"] for variant in variants] == [
        pytest.approx([20, 20, HEIGHTS[1]], abs=1e-3),
        pytest.approx([20, 20, HEIGHTS[2]], abs=1e-3),
    ]
    ids = [variant["artifact_id"] for variant in variants]
    approved = await action(hass, "approve_run", run_id=run_id, choice=ids[1])
    assert approved["run_id"] == run_id

    # The chosen part prints on the Virtual Printer, sent by KITTY in HA.
    run = await wait_for_step(runs, run_id, "watch", StepState.RUNNING)
    name = f"kitty-{ids[1]}.gcode"
    assert (job(idle_octoprint)["state"], job(idle_octoprint)["job"]["file"]["name"]) == (
        "Printing",
        name,
    )
    assert hass.states.get(state_sensor).state == "printing"
    assert run.approvals[0].choice == ids[1]

    run = await wait_for_run(runs, run_id, RunState.SUCCEEDED, PRINT_WAIT_S)

    assert set(step_states(run).values()) == {StepState.SUCCEEDED}
    assert result(run, "choose")["artifact_id"] == ids[1]
    assert result(run, "print")["file"] == name
    assert result(run, "watch")["state"] == "complete"
    assert job(idle_octoprint)["job"]["file"]["name"] == name
    assert job(idle_octoprint)["progress"]["completion"] == pytest.approx(100)
    assert hass.states.get(state_sensor).state == "complete"
    kinds = {artifact.kind for artifact in await runs.artifacts(run_id)}
    assert {ArtifactKind.CAD, ArtifactKind.LOG} <= kinds

    project = await knowledge.project(PROJECT)
    [note] = [note for note in project.notes if f"(run {run_id})" in note.text]
    assert note.text.startswith(f"Printed (run {run_id}): {COUPON_PROMPT}. Variant 2 of 2")
    assert f"part {ids[1]}" in note.text
    assert "complete after" in note.text
    links = {(link.kind, link.ref) for link in project.artifacts}
    assert {(LinkKind.CAD, ids[1]), (LinkKind.RUN, run_id)} <= links
    assert (LinkKind.PRINT, f"{printer.device_id}/{name}") in links


async def test_a_rejected_design_prints_nothing(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    runs: OrchestratorClient,
) -> None:
    """A human who says no at the gate stops the run before anything reaches the printer."""
    created = await action(
        hass,
        "create_run",
        template="fabricate",
        params={"family": "box", "parameters": COUPON, "printer": printer.device_id},
    )
    run_id = created["run_id"]
    run = await wait_for_run(runs, run_id, RunState.AWAITING_APPROVAL, DESIGN_WAIT_S)
    [variant] = result(run, "design")["variants"]

    await action(hass, "reject_run", run_id=run_id, reason="too thin")
    run = await wait_for_run(runs, run_id, RunState.ROLLED_BACK, DESIGN_WAIT_S)

    assert step_states(run) == {
        "design": StepState.SUCCEEDED,
        "choose": StepState.SKIPPED,
        "slice": StepState.SKIPPED,
        "print": StepState.SKIPPED,
        "watch": StepState.SKIPPED,
    }
    assert run.approvals[0].reason == "too thin"
    assert f"kitty-{variant['artifact_id']}.gcode" not in octoprint_files(idle_octoprint)
    assert job(idle_octoprint)["state"] == "Operational"


@pytest.mark.slow
async def test_a_print_that_fails_is_rolled_back_and_noted(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    runs: OrchestratorClient,
    knowledge: RagClient,
) -> None:
    """A printer fault mid-print fails the run; nothing is left printing; the project knows."""
    state_sensor = entity_id(hass, printer, "sensor", "state")
    created = await action(
        hass,
        "create_run",
        template="fabricate",
        params={
            "family": "box",
            "parameters": COUPON,
            "printer": state_sensor,
            "project": PROJECT,
        },
    )
    run_id = created["run_id"]
    await wait_for_run(runs, run_id, RunState.AWAITING_APPROVAL, DESIGN_WAIT_S)
    await action(hass, "approve_run", run_id=run_id)
    await wait_for_step(runs, run_id, "watch", StepState.RUNNING)

    await asyncio.to_thread(idle_octoprint.trigger_firmware_error)
    run = await wait_for_run(runs, run_id, RunState.ROLLED_BACK, PRINT_WAIT_S)
    # The Virtual Printer stays offline after its fault until it is connected again.
    await asyncio.to_thread(idle_octoprint.connect_virtual_printer)

    watch = next(step for step in run.steps if step.name == "watch")
    assert watch.state is StepState.FAILED
    assert watch.message is not None
    assert watch.message.startswith(f"the print on {printer.name} ended error")
    assert step_states(run)["print"] is StepState.COMPENSATED
    assert step_states(run)["record"] is StepState.SKIPPED
    [log] = [a for a in await runs.artifacts(run_id) if a.kind is ArtifactKind.ROLLBACK_LOG]
    assert log.size > 0
    notes = (await knowledge.project(PROJECT)).notes
    [note] = [note for note in notes if f"(run {run_id})" in note.text]
    assert note.text.startswith(f"Print failed (run {run_id}): variant 1, part ")
    assert "ended error" in note.text


async def test_undoing_the_print_cancels_the_job_the_printer_still_has(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    *,
    cad: ServiceProcess,
    home_assistant_port: int,
    hass_access_token: str,
    tmp_path: Path,
) -> None:
    """The print step's compensation cancels the running job through HA; then there is none."""
    logged: list[str] = []
    async with aiohttp.ClientSession() as session:
        cad_client = CadClient(session, cad.url, cad.token)
        made = await cad_client.generate(GenerateRequest(family="box", parameters=COUPON))
        [variant] = (await cad_client.wait(made.id, DESIGN_WAIT_S)).variants
        assert variant.artifact_id is not None
        # Printing, as a fabricate run's print step leaves the printer.
        await hass.services.async_call(
            DOMAIN,
            "start_print",
            {"device_id": printer.device_id, "artifact_id": variant.artifact_id},
            blocking=True,
        )
        home_assistant = HomeAssistantClient(
            session, f"http://127.0.0.1:{home_assistant_port}", hass_access_token
        )
        async with print_step(tmp_path, session, home_assistant, printer.device_id, logged) as undo:
            undone = await cancel_print(undo)
            again = await cancel_print(undo)

    assert undone == {"cancelled": True}
    # OctoPrint forgets a cancelled job: the printer is idle again.
    assert job(idle_octoprint)["state"] == "Operational"
    assert hass.states.get(entity_id(hass, printer, "sensor", "state")).state == "idle"
    assert again == {"cancelled": False}
    assert logged == [
        f"print on {printer.name} cancelled",
        f"nothing to cancel: {printer.name} is idle",
    ]


@asynccontextmanager
async def print_step(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    home_assistant: HomeAssistantClient,
    device_id: str,
    logged: list[str],
) -> AsyncIterator[StepContext]:
    """Yield the context the print step of a stored fabricate run is undone with.

    The printer is found as planning finds it; the step's log lines go to `logged`.
    """
    params = FabricateParams(family="box", parameters=COUPON, printer=device_id)
    steps = fabricate_steps(params, await find_printer(home_assistant, device_id))
    database = await Database.open(None, tmp_path / "runs")
    try:
        store = await RunStore.open(database, lambda: None)
        run, _created = await store.create_run(
            NewRun(
                template="fabricate",
                params=params.model_dump(mode="json"),
                steps=steps,
                requested_by=None,
                idempotency_key=None,
                correlation_id=None,
            )
        )
        [step] = [step for step in run.steps if step.name == "print"]

        async def log(line: str) -> None:
            logged.append(line)

        yield StepContext(
            run_id=run.id,
            template="fabricate",
            params=run.params,
            step=step,
            attempt=1,
            results={},
            choice=None,
            peers=peers_with(session, tmp_path, home_assistant=home_assistant),
            artifacts=ArtifactStore(tmp_path / "runs", store).sink(run.id, step.index),
            log=log,
        )
    finally:
        await database.close()
