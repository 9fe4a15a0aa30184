"""KITTY's runs in Home Assistant, against the real orchestrator process and a real broker.

One orchestrator (SQLite in its data dir, its `noop` drill template) serves the
module and pushes its statistics and run events over the module's Mosquitto, as
the KITTY Orchestrator app does. Every test makes its own runs and cancels those it
leaves waiting, so each starts with no run awaiting approval.
"""

from collections.abc import Iterator
import json
from pathlib import Path
import re
import shutil
from typing import Any

from homeassistant.components.sensor import ATTR_OPTIONS, ATTR_STATE_CLASS, SensorStateClass
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import ATTR_DEVICE_CLASS, CONF_TOKEN, CONF_URL, STATE_UNAVAILABLE
from homeassistant.core import Context, Event, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr, entity_registry as er, llm
from homeassistant.setup import async_setup_component
import probatio
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockUser,
    async_capture_events,
)
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.kitty.const import (
    DOMAIN,
    EVENT_RUN,
    SECTION_CAD,
    SECTION_ORCHESTRATOR,
    SECTION_RAG,
)
from custom_components.kitty.conversation import RemoteModeAPIInstance
from custom_components.kitty.llm_api import RUNS_PROMPT
from custom_components.kitty.runs import AUTOMATION_USER
from custom_components.kitty.services import SERVICE_APPROVE_RUN, SERVICE_REJECT_RUN
from kittyai.catalog import ServiceName
from kittyai.contract import RUN_EVENT, RUN_STATS
from kittyai.contract.orchestrator import RunEvent, RunEventType, RunState, StepState
from kittyai.orchestrator.templates.noop import GATE_REASON
from tests.helpers.broker import MosquittoBroker, module_broker
from tests.helpers.mobile_app import PHONE_NAME, PUSH_TOKEN, Phone, PushServer
from tests.helpers.orchestrator import READ_ONLY_TOKEN
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    assert_service_down,
    call_tool,
    llm_context,
    open_options,
    options_refused_then_stored,
    orchestrator_options,
    publish,
    run_orchestrator,
    runs_subscribed,
    service_request,
    set_up_kitty,
    submit_options,
    suggested,
    wait_for,
)

# A drill run of two steps that waits for approval before the first.
GATED_DRILL: dict[str, Any] = {"template": "noop", "params": {"steps": 2, "approval": True}}
# Runs reach their gate and end in their own time.
RUN_WAIT_S = 60.0
BLUEPRINTS = Path(__file__).parents[2] / "blueprints"
APPROVE_RUN = "kitty/approve_run.yaml"


@pytest.fixture(scope="module")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One broker for the module: the orchestrator stays connected to it."""
    yield from module_broker(tmp_path_factory)


@pytest.fixture(scope="module")
def orchestrator(
    tmp_path_factory: pytest.TempPathFactory, mqtt_broker: MosquittoBroker
) -> Iterator[ServiceProcess]:
    """The real orchestrator of the module, pushing over the module's broker."""
    yield from run_orchestrator(tmp_path_factory.mktemp("orchestrator"), mqtt_port=mqtt_broker.port)


@pytest.fixture(autouse=True)
def no_run_left_waiting(orchestrator: ServiceProcess) -> Iterator[None]:
    """Cancel the runs a test left waiting: the next starts with none awaiting approval."""
    yield
    waiting = orchestrator_call(orchestrator, "/api/runs?state=queued,running,awaiting_approval")
    for run in waiting["runs"]:
        orchestrator_call(orchestrator, f"/api/runs/{run['id']}/cancel", {"reason": "test over"})


@pytest.fixture
async def kitty_runs(
    hass: HomeAssistant,
    router: ServiceProcess,
    orchestrator: ServiceProcess,
    mqtt_entry: MockConfigEntry,
) -> MockConfigEntry:
    """A loaded KITTY entry whose options name the orchestrator, its sensors read."""
    entry = await set_up_kitty(hass, router, options=orchestrator_options(orchestrator))
    await runs_subscribed(hass)
    await sensors_loaded(hass, entry)
    return entry


def orchestrator_call(
    orchestrator: ServiceProcess, path: str, body: dict[str, Any] | None = None
) -> Any:
    """Call the orchestrator's own HTTP API, as another client would."""
    return json.loads(service_request(orchestrator, path, body))


async def call(
    hass: HomeAssistant, service: str, context: Context | None = None, **data: Any
) -> Any:
    """Call one of KITTY's run actions as an automation does; return its response."""
    return await hass.services.async_call(
        DOMAIN, service, data, blocking=True, return_response=True, context=context
    )


async def refusal(hass: HomeAssistant, service: str, **data: Any) -> ServiceValidationError:
    """Call a run action that must be refused; return its refusal."""
    with pytest.raises(ServiceValidationError) as refused:
        await call(hass, service, **data)
    return refused.value


def sensor_id(hass: HomeAssistant, entry: MockConfigEntry, key: str) -> str:
    """Return the entity id of a run sensor, by its key."""
    entity_id = er.async_get(hass).async_get_entity_id(
        "sensor", DOMAIN, f"{entry.unique_id}_{ServiceName.ORCHESTRATOR}_{key}"
    )
    assert entity_id is not None, f"no {key} sensor"
    return entity_id


def state(hass: HomeAssistant, entry: MockConfigEntry, key: str) -> Any:
    """Return the state object of a run sensor."""
    return hass.states.get(sensor_id(hass, entry, key))


async def sensors_loaded(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Wait until the run sensors show the orchestrator's statistics."""
    await wait_for(
        hass,
        lambda: state(hass, entry, "active_runs").state not in (STATE_UNAVAILABLE, "unknown"),
        "the run sensors",
    )


async def awaiting(hass: HomeAssistant, entry: MockConfigEntry, count: int) -> None:
    """Wait until the awaiting approval sensor counts `count` runs."""
    await wait_for(
        hass,
        lambda: state(hass, entry, "runs_awaiting_approval").state == str(count),
        f"{count} runs awaiting approval",
        within=RUN_WAIT_S,
    )


async def last_result(
    hass: HomeAssistant, entry: MockConfigEntry, run_id: str, *, block: bool = True
) -> str:
    """Wait until the last run result is `run_id`'s; return how it ended."""
    await wait_for(
        hass,
        lambda: state(hass, entry, "last_run_result").attributes.get("run_id") == run_id,
        f"the last run result to be {run_id}'s",
        within=RUN_WAIT_S,
        block=block,
    )
    return str(state(hass, entry, "last_run_result").state)


def run_states(events: list[Event], run_id: str) -> list[str]:
    """Return the run's states, in the order its run events told them."""
    return [
        event.data["state"]
        for event in events
        if event.data["run_id"] == run_id and event.data["type"] == RunEventType.RUN
    ]


def step_states(events: list[Event], run_id: str, step: str) -> list[str]:
    """Return one step's states, in the order its step events told them."""
    return [
        event.data["step_state"]
        for event in events
        if event.data["run_id"] == run_id and event.data["step_name"] == step
    ]


# -- options flow -------------------------------------------------------------------------


async def loaded_with_runs(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Wait until the entry reloaded with its orchestrator."""
    await wait_for(
        hass,
        lambda: entry.state is ConfigEntryState.LOADED and entry.runtime_data.runs is not None,
        "the entry to reload with the orchestrator",
    )


async def test_options_connect_the_orchestrator(
    hass: HomeAssistant,
    router: ServiceProcess,
    orchestrator: ServiceProcess,
    mqtt_entry: MockConfigEntry,
) -> None:
    """The orchestrator's URL and token are checked and stored; its sensors come with it."""
    entry = await set_up_kitty(hass, router)
    assert entry.runtime_data.orchestrator is None
    result = await open_options(hass, entry)
    assert set(result["data_schema"].schema) == {SECTION_CAD, SECTION_RAG, SECTION_ORCHESTRATOR}
    assert suggested(result, SECTION_ORCHESTRATOR, CONF_URL) == ""

    result = await submit_options(
        hass,
        result["flow_id"],
        orchestrator={CONF_URL: f"{orchestrator.url}/", CONF_TOKEN: orchestrator.token},
    )

    assert result["type"] is FlowResultType.CREATE_ENTRY
    # Stored as it was checked: without the trailing slash.
    assert entry.options == orchestrator_options(orchestrator)
    await loaded_with_runs(hass, entry)
    assert str(entry.runtime_data.orchestrator.url) == orchestrator.url
    await sensors_loaded(hass, entry)
    device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, f"{entry.unique_id}_{ServiceName.ORCHESTRATOR}"), entry.entry_id
    )
    assert device is not None
    assert device.name == "KITTY Orchestrator"
    registry = er.async_get(hass)
    for key in ("active_runs", "runs_awaiting_approval", "last_run_result"):
        assert registry.async_get(sensor_id(hass, entry, key)).device_id == device.id
    assert state(hass, entry, "active_runs").name == "KITTY Orchestrator Active runs"
    assert state(hass, entry, "active_runs").attributes[ATTR_STATE_CLASS] == (
        SensorStateClass.MEASUREMENT
    )
    result_state = state(hass, entry, "last_run_result")
    assert result_state.attributes[ATTR_DEVICE_CLASS] == "enum"
    assert result_state.attributes[ATTR_OPTIONS] == [
        "succeeded",
        "failed",
        "rolled_back",
        "cancelled",
    ]


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("wrong_token", "invalid_auth"),
        ("router", "not_orchestrator_service"),
        ("closed_port", "cannot_connect"),
        ("not_a_url", "invalid_url"),
    ],
)
async def test_options_errors_then_recover(
    hass: HomeAssistant,
    kitty: MockConfigEntry,
    *,
    router: ServiceProcess,
    orchestrator: ServiceProcess,
    closed_url: str,
    case: str,
    error: str,
) -> None:
    """Each problem shows its error for the orchestrator, the URL typed but no token."""
    url, token = {
        "wrong_token": (orchestrator.url, "wrong-token"),
        "router": (router.url, router.token),
        "closed_port": (closed_url, orchestrator.token),
        "not_a_url": ("orchestrator.local", orchestrator.token),
    }[case]

    await options_refused_then_stored(
        hass, kitty, SECTION_ORCHESTRATOR, orchestrator, url=url, token=token, error=error
    )

    await loaded_with_runs(hass, kitty)


async def test_options_keep_the_token_then_turn_runs_off(
    hass: HomeAssistant, kitty_runs: MockConfigEntry, orchestrator: ServiceProcess
) -> None:
    """A section sent without a token keeps the stored one; no URL turns the orchestrator off."""
    result = await open_options(hass, kitty_runs)
    # The stored URL is offered; the token never goes back to the browser.
    assert suggested(result, SECTION_ORCHESTRATOR, CONF_URL) == orchestrator.url
    assert suggested(result, SECTION_ORCHESTRATOR, CONF_TOKEN) is None

    result = await submit_options(
        hass, result["flow_id"], orchestrator={CONF_URL: orchestrator.url}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert kitty_runs.options == orchestrator_options(orchestrator)
    await loaded_with_runs(hass, kitty_runs)

    result = await submit_options(
        hass, (await open_options(hass, kitty_runs))["flow_id"], orchestrator={}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert kitty_runs.options == {}
    await wait_for(
        hass,
        lambda: (
            kitty_runs.state is ConfigEntryState.LOADED and kitty_runs.runtime_data.runs is None
        ),
        "the entry to reload without the orchestrator",
    )
    assert state(hass, kitty_runs, "active_runs").state == STATE_UNAVAILABLE
    for service, data in (
        ("create_run", {"template": "noop"}),
        ("approve_run", {"run_id": "r-0123456789ab"}),
        ("reject_run", {"run_id": "r-0123456789ab"}),
        ("cancel_run", {"run_id": "r-0123456789ab"}),
        ("retry_run", {"run_id": "r-0123456789ab"}),
    ):
        refused = await refusal(hass, service, **data)
        assert refused.translation_key == "orchestrator_not_configured", service
    # Without an orchestrator the model is not offered tools that cannot work.
    instance = await llm.async_get_api(hass, DOMAIN, llm_context())
    assert "CreateRun" not in [tool.name for tool in instance.tools]
    assert RUNS_PROMPT not in instance.api_prompt


# -- runs through Home Assistant ------------------------------------------------------------


async def test_approve_a_run_through_home_assistant(
    hass: HomeAssistant,
    kitty_runs: MockConfigEntry,
    orchestrator: ServiceProcess,
    hass_admin_user: MockUser,
) -> None:
    """kitty.create_run → one run awaiting approval → kitty.approve_run → it succeeds.

    Every change of the run and of its steps fires kitty_run_event, and the approval
    names the user who approved.
    """
    events = async_capture_events(hass, EVENT_RUN)
    user = Context(user_id=hass_admin_user.id)

    created = await call(hass, "create_run", user, **GATED_DRILL)

    run_id = created["run_id"]
    assert run_id.startswith("r-")
    assert created["template"] == "noop"
    assert created["requested_by"] == hass_admin_user.name
    assert [step["name"] for step in created["steps"]] == ["step-1", "step-2"]
    await awaiting(hass, kitty_runs, 1)
    [waiting] = state(hass, kitty_runs, "runs_awaiting_approval").attributes["runs"]
    assert (waiting["run_id"], waiting["template"], waiting["step"]) == (run_id, "noop", 0)
    assert waiting["reason"]
    assert state(hass, kitty_runs, "active_runs").state == "1"

    approved = await call(hass, "approve_run", user, run_id=run_id, reason="Drill, go on")

    assert approved["run_id"] == run_id
    assert await last_result(hass, kitty_runs, run_id) == RunState.SUCCEEDED
    await awaiting(hass, kitty_runs, 0)
    assert state(hass, kitty_runs, "active_runs").state == "0"
    assert state(hass, kitty_runs, "last_run_result").attributes["template"] == "noop"
    await wait_for(
        hass,
        lambda: run_states(events, run_id)[-1:] == [RunState.SUCCEEDED],
        "the run's last event",
    )
    assert run_states(events, run_id) == [
        RunState.QUEUED,
        RunState.RUNNING,
        RunState.AWAITING_APPROVAL,
        RunState.RUNNING,
        RunState.SUCCEEDED,
    ]
    # Approved, the step is back to pending until the engine runs it.
    assert step_states(events, run_id, "step-1") == [
        StepState.AWAITING_APPROVAL,
        StepState.PENDING,
        StepState.RUNNING,
        StepState.SUCCEEDED,
    ]
    assert step_states(events, run_id, "step-2") == [StepState.RUNNING, StepState.SUCCEEDED]
    assert {event.data["template"] for event in events} == {"noop"}
    [approval] = approved["approvals"]
    assert (approval["decision"], approval["approver"]) == ("approve", hass_admin_user.name)
    assert approval["reason"] == "Drill, go on"
    # The orchestrator keeps the approval as it was given.
    run = orchestrator_call(orchestrator, f"/api/runs/{run_id}")
    assert [(given["approver"], given["reason"]) for given in run["approvals"]] == [
        (hass_admin_user.name, "Drill, go on")
    ]


async def test_reject_rolls_the_run_back(hass: HomeAssistant, kitty_runs: MockConfigEntry) -> None:
    """A rejection, from an automation, ends the run rolled back; the automation is named."""
    events = async_capture_events(hass, EVENT_RUN)
    run_id = (await call(hass, "create_run", **GATED_DRILL))["run_id"]
    await awaiting(hass, kitty_runs, 1)

    rejected = await call(hass, "reject_run", run_id=run_id, reason="Not during the print")

    [approval] = rejected["approvals"]
    assert (approval["decision"], approval["approver"]) == ("reject", AUTOMATION_USER)
    assert approval["reason"] == "Not during the print"
    assert rejected["requested_by"] == AUTOMATION_USER
    assert await last_result(hass, kitty_runs, run_id) == RunState.ROLLED_BACK
    await awaiting(hass, kitty_runs, 0)
    await wait_for(
        hass,
        lambda: run_states(events, run_id)[-1:] == [RunState.ROLLED_BACK],
        "the run's last event",
    )
    assert StepState.SUCCEEDED not in step_states(events, run_id, "step-1")


async def test_cancel_then_retry(hass: HomeAssistant, kitty_runs: MockConfigEntry) -> None:
    """A cancelled run ends cancelled; retried, it waits at its gate again, same id."""
    run_id = (await call(hass, "create_run", **GATED_DRILL))["run_id"]
    await awaiting(hass, kitty_runs, 1)

    await call(hass, "cancel_run", run_id=run_id, reason="Wrong drill")
    assert await last_result(hass, kitty_runs, run_id) == RunState.CANCELLED
    await awaiting(hass, kitty_runs, 0)
    retried = await call(hass, "retry_run", run_id=run_id, from_step="step-1")

    assert retried["run_id"] == run_id
    await awaiting(hass, kitty_runs, 1)


async def test_same_idempotency_key_same_run(
    hass: HomeAssistant, kitty_runs: MockConfigEntry
) -> None:
    """Asking again with the same key returns the run made first instead of another."""
    first = await call(hass, "create_run", **GATED_DRILL, idempotency_key="drill-once")
    again = await call(hass, "create_run", **GATED_DRILL, idempotency_key="drill-once")

    assert again["run_id"] == first["run_id"]
    await awaiting(hass, kitty_runs, 1)


async def test_refused_requests(hass: HomeAssistant, kitty_runs: MockConfigEntry) -> None:
    """What the orchestrator refuses is a translated validation error naming the problem."""
    unknown = "r-000000000000"
    for service, data, key, named in (
        ("create_run", {"template": "no-such-template"}, "unknown_template", "no-such-template"),
        ("create_run", {"template": "noop", "params": {"steps": 0}}, "invalid_run_params", "steps"),
        ("approve_run", {"run_id": unknown}, "unknown_run", unknown),
        ("cancel_run", {"run_id": unknown}, "unknown_run", unknown),
        ("retry_run", {"run_id": unknown}, "unknown_run", unknown),
    ):
        refused = await refusal(hass, service, **data)
        assert refused.translation_key == key, service
        assert named in str(refused), service


async def test_deciding_a_run_that_does_not_wait(
    hass: HomeAssistant, kitty_runs: MockConfigEntry
) -> None:
    """Approving a run not waiting, or without the choice its gate needs, is refused."""
    done = (await call(hass, "create_run", template="noop", params={"steps": 1}))["run_id"]
    assert await last_result(hass, kitty_runs, done) == RunState.SUCCEEDED
    choosing = await call(
        hass, "create_run", template="noop", params={"approval": True, "choices": ["v1", "v2"]}
    )
    await awaiting(hass, kitty_runs, 1)

    for service, data, key in (
        ("approve_run", {"run_id": done}, "run_not_awaiting_approval"),
        ("reject_run", {"run_id": done}, "run_not_awaiting_approval"),
        ("approve_run", {"run_id": choosing["run_id"], "choice": "v3"}, "invalid_run_choice"),
        ("retry_run", {"run_id": done}, "run_cannot_retry"),
        ("cancel_run", {"run_id": done}, "run_already_finished"),
    ):
        assert (await refusal(hass, service, **data)).translation_key == key, service
    # The gate still waits; the choice it offers is taken.
    picked = await call(hass, "approve_run", run_id=choosing["run_id"], choice="v2")
    assert picked["approvals"][0]["choice"] == "v2"
    assert await last_result(hass, kitty_runs, choosing["run_id"]) == RunState.SUCCEEDED


async def test_action_fields_are_checked(hass: HomeAssistant, kitty_runs: MockConfigEntry) -> None:
    """A run needs its template; parameters are an object; a reason has at most 1000 characters."""
    with pytest.raises(probatio.Invalid):
        await call(hass, "create_run", params={"steps": 1})
    with pytest.raises(probatio.Invalid):
        await call(hass, "create_run", template="noop", params="steps=1")
    with pytest.raises(probatio.Invalid):
        await call(hass, "reject_run", run_id="r-000000000000", reason="x" * 1001)


async def test_orchestrator_down_and_token_refused(
    hass: HomeAssistant,
    *,
    router: ServiceProcess,
    orchestrator: ServiceProcess,
    mqtt_entry: MockConfigEntry,
    closed_url: str,
    hass_client: ClientSessionGenerator,
) -> None:
    """An orchestrator that does not answer, or refuses the token, fails the actions only."""
    entry = await set_up_kitty(hass, router, options=orchestrator_options(url=closed_url))
    assert entry.state is ConfigEntryState.LOADED
    await wait_for(
        hass,
        lambda: state(hass, entry, "active_runs").state == STATE_UNAVAILABLE,
        "the active runs sensor to be unavailable",
    )
    with pytest.raises(HomeAssistantError) as failed:
        await call(hass, "create_run", **GATED_DRILL)
    assert failed.value.translation_key == "orchestrator_unavailable"
    assert closed_url in str(failed.value)
    # The model reads the same: its tools answer with the error instead of failing the turn.
    await assert_service_down(
        hass,
        hass_client,
        entry,
        section="orchestrator",
        url=closed_url,
        tools={
            "CreateRun": {"template": "noop", "confirm": True},
            "RunStatus": {"run_id": "r-0123456789ab"},
            "ListRunsAwaitingApproval": {},
        },
    )
    assert await hass.config_entries.async_unload(entry.entry_id)

    entry = await set_up_kitty(
        hass, router, options=orchestrator_options(url=orchestrator.url, token="wrong-token-0123")
    )
    with pytest.raises(HomeAssistantError) as rejected:
        await call(hass, "create_run", **GATED_DRILL)
    assert rejected.value.translation_key == "orchestrator_invalid_auth"
    assert "wrong-token" not in str(rejected.value)
    assert await hass.config_entries.async_unload(entry.entry_id)

    # A token that may only read sees the runs, and may not decide.
    run = orchestrator_call(orchestrator, "/api/runs", GATED_DRILL)
    entry = await set_up_kitty(
        hass, router, options=orchestrator_options(url=orchestrator.url, token=READ_ONLY_TOKEN)
    )
    await sensors_loaded(hass, entry)
    refused = await refusal(hass, "approve_run", run_id=run["id"])
    assert refused.translation_key == "orchestrator_missing_scope"
    assert "runs:approve" in str(refused)
    assert orchestrator_call(orchestrator, f"/api/runs/{run['id']}")["approvals"] == []


# -- what the orchestrator pushes -------------------------------------------------------------


async def test_events_sent_twice_fire_once(
    hass: HomeAssistant, kitty_runs: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    """An event delivered again after a restart fires once; log lines and broken ones not at all."""
    events = async_capture_events(hass, EVENT_RUN)
    run_id = "r-feedfacecafe"
    topic = RUN_EVENT.topic_for(run_id=run_id)

    def event(seq: int, event_type: RunEventType, **fields: Any) -> str:
        return RunEvent(
            seq=seq,
            run_id=run_id,
            template="noop",
            type=event_type,
            at="2026-10-22T14:30:00Z",
            state=RunState.RUNNING,
            **fields,
        ).model_dump_json()

    await publish(hass, topic, event(7, RunEventType.RUN))
    await publish(hass, topic, event(8, RunEventType.LOG, message="drill step 1 ran"))
    await publish(hass, topic, event(7, RunEventType.RUN))
    await publish(hass, topic, '{"run_id": "r-feedfacecafe"}')
    await publish(
        hass,
        topic,
        event(9, RunEventType.STEP, step=0, step_name="step-1", step_state=StepState.RUNNING),
    )
    await wait_for(hass, lambda: len(events) == 2, "the step event")

    assert [event.data["seq"] for event in events] == [7, 9]
    assert events[1].data == {
        "run_id": run_id,
        "template": "noop",
        "type": "step",
        "state": "running",
        "step": 0,
        "step_name": "step-1",
        "step_state": "running",
        "message": None,
        "at": "2026-10-22T14:30:00+00:00",
        "seq": 9,
    }
    assert "breaks the KITTY contract" in caplog.text


async def test_broken_statistics_are_ignored(
    hass: HomeAssistant, kitty_runs: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    """A payload on the statistics topic that breaks the contract changes nothing."""
    active = state(hass, kitty_runs, "active_runs").state

    await publish(hass, RUN_STATS.pattern, '{"active": "many"}')
    await wait_for(
        hass, lambda: "breaks the KITTY contract" in caplog.text, "the broken payload warning"
    )

    assert state(hass, kitty_runs, "active_runs").state == active


async def test_a_waiting_run_survives_a_crash(
    hass: HomeAssistant, kitty_runs: MockConfigEntry, orchestrator: ServiceProcess
) -> None:
    """SIGKILLed while a run waits: the sensors go unavailable, then the run still waits.

    Approved after the restart, it succeeds.
    """
    run_id = (await call(hass, "create_run", **GATED_DRILL))["run_id"]
    await awaiting(hass, kitty_runs, 1)

    orchestrator.kill()
    await wait_for(
        hass,
        lambda: state(hass, kitty_runs, "runs_awaiting_approval").state == STATE_UNAVAILABLE,
        "the sensors to be unavailable",
    )
    with pytest.raises(HomeAssistantError) as failed:
        await call(hass, "approve_run", run_id=run_id)
    assert failed.value.translation_key == "orchestrator_unavailable"
    await hass.async_add_executor_job(orchestrator.start, 60)

    await awaiting(hass, kitty_runs, 1)
    await call(hass, "approve_run", run_id=run_id, reason="After the crash")
    assert await last_result(hass, kitty_runs, run_id) == RunState.SUCCEEDED


async def test_diagnostics_redact_the_orchestrator_token(
    hass: HomeAssistant,
    kitty_runs: MockConfigEntry,
    orchestrator: ServiceProcess,
    hass_client: ClientSessionGenerator,
) -> None:
    """The orchestrator's token never leaves; its URL and statistics do."""
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, kitty_runs)

    assert orchestrator.token not in json.dumps(diagnostics)
    assert diagnostics["entry"]["options"][SECTION_ORCHESTRATOR] == {
        CONF_URL: orchestrator.url,
        CONF_TOKEN: "**REDACTED**",
    }
    assert diagnostics["orchestrator"]["url"] == orchestrator.url
    assert diagnostics["orchestrator"]["available"] is True
    assert diagnostics["orchestrator"]["stats"]["active"] == 0


# -- LLM tools ------------------------------------------------------------------------------


async def test_tools_request_and_explain_runs(
    hass: HomeAssistant,
    kitty_runs: MockConfigEntry,
    orchestrator: ServiceProcess,
    hass_admin_user: MockUser,
) -> None:
    """The model asks before it requests a run, then explains where the run is."""
    instance = await llm.async_get_api(hass, DOMAIN, llm_context())
    tools = {tool.name: tool for tool in instance.tools}
    assert {"CreateRun", "RunStatus", "ListRunsAwaitingApproval"} <= set(tools)
    assert RUNS_PROMPT in instance.api_prompt
    assert tools["RunStatus"].annotations.read_only
    assert tools["ListRunsAwaitingApproval"].annotations.read_only
    assert not tools["CreateRun"].annotations.read_only
    # Remote mode still tells about runs, and requests none.
    remote = {tool.name for tool in RemoteModeAPIInstance.of(instance).tools}
    assert {"RunStatus", "ListRunsAwaitingApproval"} <= remote
    assert "CreateRun" not in remote
    total = orchestrator_call(orchestrator, "/api/stats")["total"]

    asked = await call_tool(hass, "CreateRun", template="noop", params={"approval": True})

    assert not asked.error
    assert (asked.data["done"], asked.data["confirmation_required"]) == (False, True)
    assert asked.data["template"] == "noop"
    assert "Ask the user to confirm" in asked.data["instruction"]
    assert orchestrator_call(orchestrator, "/api/stats")["total"] == total

    created = await call_tool(
        hass,
        "CreateRun",
        user_id=hass_admin_user.id,
        template="noop",
        params={"approval": True},
        confirm=True,
    )

    assert created.data["done"] is True
    run_id = created.data["run_id"]
    assert created.data["requested_by"] == hass_admin_user.name
    assert created.data["explanation"]
    await awaiting(hass, kitty_runs, 1)
    status = await call_tool(hass, "RunStatus", run_id=run_id)
    assert status.data["state"] == RunState.AWAITING_APPROVAL
    assert status.data["awaiting_approval"]["name"] == "step-1"
    explanation = status.data["explanation"]
    assert status.data["awaiting_approval"]["reason"] in explanation
    assert "Only a person can approve or reject" in explanation
    listed = await call_tool(hass, "ListRunsAwaitingApproval")
    assert [run["run_id"] for run in listed.data["runs"]] == [run_id]
    assert "You cannot" in listed.data["instruction"]

    await call(hass, "reject_run", run_id=run_id, reason="Not today")
    assert await last_result(hass, kitty_runs, run_id) == RunState.ROLLED_BACK
    ended = await call_tool(hass, "RunStatus", run_id=run_id)
    assert ended.data["explanation"].startswith("The run was rolled back")
    assert ended.data["approvals"][0]["reason"] == "Not today"

    unknown = await call_tool(hass, "RunStatus", run_id="r-000000000000")
    assert unknown.error
    assert "r-000000000000" in unknown.data["error"]
    refused = await call_tool(hass, "CreateRun", template="no-such-template", confirm=True)
    assert refused.error
    assert "no-such-template" in refused.data["error"]


async def test_no_tool_can_approve(
    hass: HomeAssistant, kitty_runs: MockConfigEntry, orchestrator: ServiceProcess
) -> None:
    """No tool of KITTY's API approves or rejects: whatever the model calls, the gate waits."""
    run_id = (await call(hass, "create_run", **GATED_DRILL))["run_id"]
    await awaiting(hass, kitty_runs, 1)
    instance = await llm.async_get_api(hass, DOMAIN, llm_context())

    for tool in instance.tools:
        # ListRunsAwaitingApproval lists; a verb would name what a tool does.
        assert not re.search(r"Approve|Reject|Decide", tool.name), tool.name
        assert getattr(tool, "service", None) not in (SERVICE_APPROVE_RUN, SERVICE_REJECT_RUN)
    await call_tool(hass, "RunStatus", run_id=run_id)
    await call_tool(hass, "ListRunsAwaitingApproval")
    await call_tool(hass, "CreateRun", template="noop", params={"steps": 1}, confirm=True)

    run = orchestrator_call(orchestrator, f"/api/runs/{run_id}")
    assert run["state"] == RunState.AWAITING_APPROVAL
    assert run["approvals"] == []


# -- the approval blueprint ------------------------------------------------------------------


@pytest.fixture
async def phone_asks(hass: HomeAssistant, phone: Phone, config_dir: Path) -> Phone:
    """The phone, asked about every run by the approval blueprint with its defaults."""
    await approval_automation(hass, config_dir, notify_device=phone.device_id)
    return phone


async def approval_automation(hass: HomeAssistant, config_dir: Path, **inputs: Any) -> None:
    """Set up the approval blueprint as a user does: imported, then used by an automation."""
    shutil.copytree(BLUEPRINTS, config_dir / "blueprints", dirs_exist_ok=True)
    config = {"alias": "KITTY approvals", "use_blueprint": {"path": APPROVE_RUN, "input": inputs}}
    assert await async_setup_component(hass, "automation", {"automation": config})
    await hass.async_block_till_done()
    assert hass.states.get("automation.kitty_approvals").state == "on"


def buttons(notification: dict[str, Any]) -> dict[str, str]:
    """Return a notification's buttons: title → action id."""
    return {button["title"]: button["action"] for button in notification["data"]["actions"]}


async def notified(hass: HomeAssistant, push: PushServer, count: int) -> dict[str, Any]:
    """Wait until the phone got `count` notifications; return the last.

    The automation waits for the phone meanwhile: HA works on without waiting for it.
    """
    await wait_for(
        hass,
        lambda: len(push.notifications) >= count,
        f"notification {count}",
        within=RUN_WAIT_S,
        block=False,
    )
    return push.notifications[count - 1]


def automation_runs(hass: HomeAssistant) -> int:
    """Return how many runs of the approval automation are going."""
    return int(hass.states.get("automation.kitty_approvals").attributes["current"])


@pytest.mark.parametrize(
    ("button", "decision", "done", "ending"),
    [
        ("Approve", "approve", "Approved", RunState.SUCCEEDED),
        ("Reject", "reject", "Rejected", RunState.ROLLED_BACK),
    ],
)
async def test_the_phone_decides_a_waiting_run(
    hass: HomeAssistant,
    kitty_runs: MockConfigEntry,
    orchestrator: ServiceProcess,
    phone_asks: Phone,
    push_server: PushServer,
    *,
    button: str,
    decision: str,
    done: str,
    ending: RunState,
) -> None:
    """A run at its gate asks the phone; the button tapped decides it, naming the phone."""
    run_id = (await call(hass, "create_run", **GATED_DRILL))["run_id"]

    question = await notified(hass, push_server, 1)
    assert question["push_token"] == PUSH_TOKEN
    assert question["title"] == "KITTY: noop run waits for you"
    assert question["message"] == f"{GATE_REASON}. Approve or reject run {run_id}?"
    assert question["data"]["tag"] == f"kitty_run_{run_id}"
    assert buttons(question) == {
        "Approve": f"KITTY_APPROVE_{run_id}",
        "Reject": f"KITTY_REJECT_{run_id}",
    }
    assert orchestrator_call(orchestrator, f"/api/runs/{run_id}")["state"] == "awaiting_approval"

    await phone_asks.tap(buttons(question)[button])

    assert await last_result(hass, kitty_runs, run_id, block=False) == ending
    [approval] = orchestrator_call(orchestrator, f"/api/runs/{run_id}")["approvals"]
    assert (approval["decision"], approval["approver"]) == (decision, AUTOMATION_USER)
    assert approval["reason"] == f"{done} from the notification on {PHONE_NAME}"
    # The answer ends the automation's run: the phone is told nothing more.
    await wait_for(hass, lambda: automation_runs(hass) == 0, "the automation to end", block=False)
    assert len(push_server.notifications) == 1


async def test_decided_elsewhere_takes_the_question_back(
    hass: HomeAssistant, kitty_runs: MockConfigEntry, phone_asks: Phone, push_server: PushServer
) -> None:
    """A run decided in Home Assistant, not on the phone, takes its notification back."""
    run_id = (await call(hass, "create_run", **GATED_DRILL))["run_id"]
    await notified(hass, push_server, 1)

    await call(hass, "approve_run", run_id=run_id)

    taken_back = await notified(hass, push_server, 2)
    assert taken_back["message"] == "clear_notification"
    assert taken_back["data"] == {"tag": f"kitty_run_{run_id}"}
    await wait_for(hass, lambda: automation_runs(hass) == 0, "the automation to end", block=False)


async def test_no_answer_in_time_leaves_the_run_waiting(
    hass: HomeAssistant,
    *,
    kitty_runs: MockConfigEntry,
    orchestrator: ServiceProcess,
    phone: Phone,
    push_server: PushServer,
    config_dir: Path,
) -> None:
    """Without an answer in time the phone is told the run still waits; nothing is decided."""
    await approval_automation(
        hass,
        config_dir,
        notify_device=phone.device_id,
        templates=["noop"],
        answer_timeout={"seconds": 1},
        approve_text="Freigeben",
        reject_text="Ablehnen",
    )

    run_id = (await call(hass, "create_run", **GATED_DRILL))["run_id"]

    assert list(buttons(await notified(hass, push_server, 1))) == ["Freigeben", "Ablehnen"]
    still = await notified(hass, push_server, 2)
    assert still["title"] == "KITTY: noop run still waits"
    assert still["data"] == {"tag": f"kitty_run_{run_id}"}
    run = orchestrator_call(orchestrator, f"/api/runs/{run_id}")
    assert (run["state"], run["approvals"]) == ("awaiting_approval", [])


async def test_runs_of_other_templates_are_not_asked_about(
    hass: HomeAssistant,
    kitty_runs: MockConfigEntry,
    phone: Phone,
    push_server: PushServer,
    config_dir: Path,
) -> None:
    """With templates chosen, a run of another template sends nothing."""
    await approval_automation(
        hass, config_dir, notify_device=phone.device_id, templates=["app_update"]
    )

    await call(hass, "create_run", **GATED_DRILL)

    await awaiting(hass, kitty_runs, 1)
    assert push_server.notifications == []
