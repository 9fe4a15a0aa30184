"""An OctoPrint printer in KITTY, against a real OctoPrint with its Virtual Printer.

One OctoPrint serves the module; every test leaves its printer idle and connected.
Jobs are G-code files of dwells that the Virtual Printer really waits out. OctoPrint
takes three AppKeys requests a minute from one address: two pairing tests run first,
and the test with two more runs after the one that restarts the server, which
forgets the count.
"""

from collections.abc import AsyncIterator
from datetime import datetime
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from homeassistant.components import camera
from homeassistant.components.button import DOMAIN as BUTTON_DOMAIN, SERVICE_PRESS
from homeassistant.components.camera import DOMAIN as CAMERA_DOMAIN
from homeassistant.config_entries import SOURCE_REAUTH, SOURCE_USER, ConfigEntryState
from homeassistant.const import (
    ATTR_DEVICE_ID,
    ATTR_ENTITY_ID,
    CONF_API_KEY,
    CONF_URL,
    CONF_USERNAME,
    STATE_OFF,
    STATE_ON,
    STATE_UNAVAILABLE,
    STATE_UNKNOWN,
)
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult, FlowResultType
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr, entity_registry as er, llm
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    get_schema_suggested_value,
)
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.kitty import pairing
from custom_components.kitty.const import CONF_KIND, DOMAIN, SUBENTRY_PRINTER
from custom_components.kitty.printer_coordinator import (
    IDLE_INTERVAL,
    PRINTING_INTERVAL,
    PrinterCoordinator,
)
from kittyai.printers.octoprint import OctoPrintClient
from tests.helpers.gcode import BED_TARGET_C, NOZZLE_TARGET_C, write_timed_gcode
from tests.helpers.net import free_port
from tests.helpers.octoprint import SNAPSHOT_URL, STREAM_PATH, OctoPrintServer
from tests.integration.common import call_tool, llm_context, wait_for

EN: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "custom_components/kitty/translations/en.json").read_text()
)
# What OctoPrint calls a server without a name of its own.
PRINTER_NAME = "OctoPrint (127.0.0.1)"
JOB_SECONDS = 20


# -- helpers ------------------------------------------------------------------------------


def assert_translated(result: FlowResult) -> None:
    """Fail unless the step, its errors and its abort reason have English strings."""
    flow = EN["config_subentries"]["printer"]
    if isinstance(result["handler"], str):
        flow = EN["config"]
    if result["type"] is FlowResultType.ABORT and result.get("translation_domain") is None:
        assert result["reason"] in flow["abort"], result["reason"]
    if result["type"] in (FlowResultType.FORM, FlowResultType.MENU):
        assert result["step_id"] in flow["step"], result["step_id"]
        for error in (result.get("errors") or {}).values():
            assert error in flow["error"], error
    if result["type"] is FlowResultType.SHOW_PROGRESS:
        assert result["progress_action"] in flow["progress"]


async def start_octoprint_flow(hass: HomeAssistant, entry: MockConfigEntry) -> str:
    """Open the add printer flow, pick OctoPrint, and return the flow id."""
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_PRINTER), context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.MENU
    assert_translated(result)
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"next_step_id": "octoprint"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "octoprint"
    assert_translated(result)
    return result["flow_id"]


async def configure(hass: HomeAssistant, flow_id: str, data: dict[str, Any]) -> FlowResult:
    """Submit a step of a printer flow; check that what it shows is translated."""
    result = await hass.config_entries.subentries.async_configure(flow_id, data)
    assert_translated(result)
    return result


async def add_octoprint(
    hass: HomeAssistant, entry: MockConfigEntry, octoprint: OctoPrintServer
) -> PrinterCoordinator:
    """Add the OctoPrint to a loaded KITTY entry with its key; return it once it answered."""
    flow_id = await start_octoprint_flow(hass, entry)
    result = await configure(
        hass, flow_id, {CONF_URL: octoprint.url, CONF_API_KEY: octoprint.api_key}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    return await loaded_printer(hass, entry)


async def loaded_printer(hass: HomeAssistant, entry: MockConfigEntry) -> PrinterCoordinator:
    """Wait for the entry to (re)load with its printer, and for the printer's first answer."""
    await wait_for(
        hass,
        lambda: entry.state is ConfigEntryState.LOADED and bool(entry.runtime_data.printers),
        "the entry to load with its printer",
    )
    [printer] = entry.runtime_data.printers.values()
    await wait_for(hass, lambda: printer.online, "the printer's first answer")
    return printer


def entity_id(hass: HomeAssistant, printer: PrinterCoordinator, platform: str, key: str) -> str:
    """Return the entity id of one of the printer's entities."""
    found = er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{printer.unique_id}_{key}")
    assert found is not None, f"{platform} {key}"
    return found


def state(hass: HomeAssistant, printer: PrinterCoordinator, platform: str, key: str) -> str:
    """Return the state of one of the printer's entities."""
    return hass.states.get(entity_id(hass, printer, platform, key)).state


def job(octoprint: OctoPrintServer) -> dict[str, Any]:
    """Return what OctoPrint itself says about its job."""
    return octoprint.request("GET", "/api/job")


async def call(
    hass: HomeAssistant, service: str, data: dict[str, Any], **kwargs: Any
) -> dict[str, Any] | None:
    """Call one of KITTY's printer actions as an automation does, waiting for it."""
    return await hass.services.async_call(DOMAIN, service, data, blocking=True, **kwargs)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
async def printer(
    hass: HomeAssistant, kitty: MockConfigEntry, idle_octoprint: OctoPrintServer
) -> PrinterCoordinator:
    """The OctoPrint, added to KITTY through the flow with its API key."""
    return await add_octoprint(hass, kitty, idle_octoprint)


@pytest.fixture
def unloaded_kitty(hass: HomeAssistant, closed_url: str) -> MockConfigEntry:
    """A KITTY entry that is not set up: its flows need neither router nor broker."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id="kitty-instance",
        data={CONF_URL: closed_url, "token": "token"},
        minor_version=2,
    )
    entry.add_to_hass(hass)
    return entry


def octoprint_subentry(
    octoprint: OctoPrintServer, *, unique_id: str, api_key: str | None = None, url: str = ""
) -> dict[str, Any]:
    """Return a printer subentry as the flow stores it."""
    return {
        "subentry_type": SUBENTRY_PRINTER,
        "data": {
            CONF_KIND: "octoprint",
            CONF_URL: url or octoprint.url,
            CONF_API_KEY: api_key or octoprint.api_key,
        },
        "title": PRINTER_NAME,
        "unique_id": unique_id,
    }


# -- adding a printer ---------------------------------------------------------------------


async def test_add_with_api_key(
    hass: HomeAssistant,
    kitty: MockConfigEntry,
    idle_octoprint: OctoPrintServer,
    device_registry: dr.DeviceRegistry,
) -> None:
    """URL and key make a printer subentry keyed by OctoPrint's UUID, with a device."""
    printer = await add_octoprint(hass, kitty, idle_octoprint)

    [subentry] = [s for s in kitty.subentries.values() if s.subentry_type == SUBENTRY_PRINTER]
    assert subentry.title == PRINTER_NAME
    assert dict(subentry.data) == {
        CONF_KIND: "octoprint",
        CONF_URL: idle_octoprint.url,
        CONF_API_KEY: idle_octoprint.api_key,
    }
    assert printer.info is not None
    assert subentry.unique_id == printer.info.unique_id
    device = device_registry.async_get(printer.device_id)
    assert device.name == PRINTER_NAME
    assert device.manufacturer == "OctoPrint"
    assert device.sw_version == "1.11.8"
    assert device.configuration_url == idle_octoprint.url
    assert device.config_entry_id == kitty.entry_id
    assert device.config_subentry_id == subentry.subentry_id

    # An idle, connected printer: no job, heaters reporting room temperature.
    assert state(hass, printer, "sensor", "state") == "idle"
    assert state(hass, printer, "binary_sensor", "printing") == STATE_OFF
    assert state(hass, printer, "binary_sensor", "error") == STATE_OFF
    for key in ("time_left", "estimated_finish", "job_started"):
        assert state(hass, printer, "sensor", key) == STATE_UNKNOWN
    assert float(state(hass, printer, "sensor", "nozzle_temperature")) >= 0
    assert float(state(hass, printer, "sensor", "bed_target")) == 0
    assert printer.update_interval == IDLE_INTERVAL
    # OctoPrint's webcam, with the relative stream URL resolved against the server.
    camera = entity_id(hass, printer, CAMERA_DOMAIN, "webcam")
    assert hass.states.get(camera).state == "idle"
    camera_entity = hass.data["camera"].get_entity(camera)
    assert camera_entity._stream_url == f"{idle_octoprint.url}{STREAM_PATH}"
    assert camera_entity._snapshot_url == SNAPSHOT_URL


async def test_add_by_pairing(
    hass: HomeAssistant, unloaded_kitty: MockConfigEntry, octoprint: OctoPrintServer
) -> None:
    """Without a key, KITTY asks OctoPrint for one and waits until the user allows it."""
    flow_id = await start_octoprint_flow(hass, unloaded_kitty)
    result = await configure(hass, flow_id, {CONF_URL: octoprint.url, CONF_USERNAME: "kitty"})
    assert result["type"] is FlowResultType.SHOW_PROGRESS
    assert result["step_id"] == "pair"
    assert result["description_placeholders"] == {"url": octoprint.url}

    await hass.async_add_executor_job(lambda: octoprint.decide_app_key("KITTY", allow=True))
    await wait_for(
        hass,
        lambda: hass.config_entries.subentries.async_get(flow_id)["step_id"] == "paired",
        "the pairing to end",
    )
    result = await configure(hass, flow_id, {})

    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == PRINTER_NAME
    api_key = result["data"][CONF_API_KEY]
    assert api_key != octoprint.api_key
    # The key is KITTY's own, listed under its name for the user who allowed it.
    keys = octoprint.request("GET", "/api/plugin/appkeys")["keys"]
    assert {"app_id": "KITTY", "user_id": octoprint.username} in keys


async def test_pairing_times_out(
    hass: HomeAssistant,
    unloaded_kitty: MockConfigEntry,
    octoprint: OctoPrintServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nobody answering in OctoPrint ends the wait with an error, not a hanging dialog."""
    monkeypatch.setattr(pairing, "PAIRING_TIMEOUT_S", 0.5)
    flow_id = await start_octoprint_flow(hass, unloaded_kitty)
    result = await configure(hass, flow_id, {CONF_URL: octoprint.url})
    assert result["type"] is FlowResultType.SHOW_PROGRESS

    await wait_for(
        hass,
        lambda: hass.config_entries.subentries.async_get(flow_id)["step_id"] == "paired",
        "the pairing to time out",
    )
    result = await configure(hass, flow_id, {})
    assert result["errors"] == {"base": "pairing_timeout"}


@pytest.mark.parametrize(
    "case",
    ["closed_port", "closed_port_pairing", "wrong_key", "not_a_url", "not_a_url_pairing"],
)
async def test_add_errors_then_recovers(
    hass: HomeAssistant,
    unloaded_kitty: MockConfigEntry,
    octoprint: OctoPrintServer,
    closed_url: str,
    case: str,
) -> None:
    """Each error shows the form again with what was typed, but never the key."""
    data, error = {
        "closed_port": ({CONF_URL: closed_url, CONF_API_KEY: octoprint.api_key}, "cannot_connect"),
        "closed_port_pairing": ({CONF_URL: closed_url}, "cannot_connect"),
        "wrong_key": ({CONF_URL: octoprint.url, CONF_API_KEY: "0123456789AB"}, "invalid_auth"),
        "not_a_url": ({CONF_URL: "octopi.local", CONF_API_KEY: octoprint.api_key}, "invalid_url"),
        "not_a_url_pairing": ({CONF_URL: "octopi.local"}, "invalid_url"),
    }[case]
    flow_id = await start_octoprint_flow(hass, unloaded_kitty)

    result = await configure(hass, flow_id, data)

    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": error}
    schema = result["data_schema"].schema
    assert get_schema_suggested_value(schema, CONF_URL) == data[CONF_URL]
    assert get_schema_suggested_value(schema, CONF_API_KEY) is None
    result = await configure(
        hass, flow_id, {CONF_URL: octoprint.url, CONF_API_KEY: octoprint.api_key}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_add_not_a_print_server(
    hass: HomeAssistant,
    unloaded_kitty: MockConfigEntry,
    not_kitty_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that is no OctoPrint offers no pairing, and its answers are logged."""
    flow_id = await start_octoprint_flow(hass, unloaded_kitty)

    result = await configure(hass, flow_id, {CONF_URL: not_kitty_url})
    assert result["errors"] == {"base": "app_keys_unavailable"}

    result = await configure(hass, flow_id, {CONF_URL: not_kitty_url, CONF_API_KEY: "key"})
    assert result["errors"] == {"base": "unknown"}
    assert f"Unexpected answer from {not_kitty_url}" in caplog.text


async def test_same_printer_twice_aborts(
    hass: HomeAssistant, unloaded_kitty: MockConfigEntry, octoprint: OctoPrintServer
) -> None:
    """A printer KITTY has, known by OctoPrint's UUID, is not added again."""
    flow_id = await start_octoprint_flow(hass, unloaded_kitty)
    assert (
        await configure(hass, flow_id, {CONF_URL: octoprint.url, CONF_API_KEY: octoprint.api_key})
    )["type"] is FlowResultType.CREATE_ENTRY

    flow_id = await start_octoprint_flow(hass, unloaded_kitty)
    result = await configure(
        hass,
        flow_id,
        {CONF_URL: f"{octoprint.url}/", CONF_API_KEY: octoprint.api_key},
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


def generate_app_key(octoprint: OctoPrintServer, app: str) -> str:
    """Have OctoPrint make an application key for `app`, as its settings page does."""
    return octoprint.request("POST", "/api/plugin/appkeys", {"command": "generate", "app": app})[
        "api_key"
    ]


async def test_reconfigure(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    kitty: MockConfigEntry,
    idle_octoprint: OctoPrintServer,
) -> None:
    """A new key is tested and stored; an empty one keeps the key; the entry reloads."""
    subentry = printer.subentry
    url = subentry.data[CONF_URL]
    result = await kitty.start_subentry_reconfigure_flow(hass, subentry.subentry_id)
    assert result["step_id"] == "reconfigure"
    assert get_schema_suggested_value(result["data_schema"].schema, CONF_URL) == url
    assert_translated(result)

    result = await configure(hass, result["flow_id"], {CONF_URL: "octopi.local"})
    assert result["errors"] == {"base": "invalid_url"}
    assert get_schema_suggested_value(result["data_schema"].schema, CONF_URL) == "octopi.local"
    result = await configure(hass, result["flow_id"], {CONF_URL: url, CONF_API_KEY: "bad"})
    assert result["errors"] == {"base": "invalid_auth"}
    new_key = generate_app_key(idle_octoprint, "KITTY reconfigured")
    result = await configure(hass, result["flow_id"], {CONF_URL: f"{url}/", CONF_API_KEY: new_key})

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert dict(kitty.subentries[subentry.subentry_id].data) == {
        CONF_KIND: "octoprint",
        CONF_URL: url,
        CONF_API_KEY: new_key,
    }
    reloaded = await loaded_printer(hass, kitty)
    assert reloaded is not printer

    # Without a key typed in, the stored one stays.
    result = await kitty.start_subentry_reconfigure_flow(hass, subentry.subentry_id)
    result = await configure(hass, result["flow_id"], {CONF_URL: url})
    assert result["reason"] == "reconfigure_successful"
    assert kitty.subentries[subentry.subentry_id].data[CONF_API_KEY] == new_key


async def test_reconfigure_waiting_entry_and_another_printer(
    hass: HomeAssistant, closed_url: str, octoprint: OctoPrintServer
) -> None:
    """An entry waiting for its router takes the change too; another printer is refused."""
    session = async_get_clientsession(hass)
    info = await OctoPrintClient(session, octoprint.url, octoprint.api_key).info()
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id="kitty-instance",
        data={CONF_URL: closed_url, "token": "token"},
        minor_version=2,
        subentries_data=[
            octoprint_subentry(octoprint, unique_id="another-printer"),
            octoprint_subentry(octoprint, unique_id=info.unique_id, url=closed_url),
        ],
    )
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    another, moved = entry.subentries.values()

    result = await entry.start_subentry_reconfigure_flow(hass, another.subentry_id)
    result = await configure(hass, result["flow_id"], {CONF_URL: octoprint.url})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unique_id_mismatch"

    result = await entry.start_subentry_reconfigure_flow(hass, moved.subentry_id)
    result = await configure(hass, result["flow_id"], {CONF_URL: octoprint.url})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.subentries[moved.subentry_id].data[CONF_URL] == octoprint.url
    await hass.async_block_till_done()
    # Reloaded, and still waiting for its router.
    assert entry.state is ConfigEntryState.SETUP_RETRY


# -- jobs ---------------------------------------------------------------------------------


async def test_print_pause_resume_cancel(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    prints: Path,
) -> None:
    """A whole job from kitty.start_print, followed by the entities, run by buttons and actions."""
    gcode = write_timed_gcode(prints / "bracket.gcode", JOB_SECONDS)
    device = {ATTR_DEVICE_ID: printer.device_id}

    response = await call(hass, "start_print", {**device, "file": str(gcode)}, return_response=True)

    # The action returns once OctoPrint shows the job printing; the entities show it at once.
    assert response is not None
    assert response["state"] == "printing"
    assert response["file"] == "bracket.gcode"
    assert job(idle_octoprint)["job"]["file"]["name"] == "bracket.gcode"
    assert state(hass, printer, "sensor", "state") == "printing"
    assert state(hass, printer, "binary_sensor", "printing") == STATE_ON
    assert state(hass, printer, "sensor", "current_file") == "bracket.gcode"
    # Printing, OctoPrint is polled every 5 s: progress rises without anyone asking.
    assert printer.update_interval == PRINTING_INTERVAL
    first = progress(hass, printer)
    await wait_for(
        hass,
        lambda: progress(hass, printer) > first,
        "progress to rise",
        within=PRINTING_INTERVAL.total_seconds() * 3,
    )
    await wait_for(
        hass,
        lambda: state(hass, printer, "sensor", "time_left") != STATE_UNKNOWN,
        "OctoPrint's estimate",
        within=PRINTING_INTERVAL.total_seconds() * 3,
    )
    assert 0 < float(state(hass, printer, "sensor", "time_left")) <= JOB_SECONDS * 3
    finish = datetime.fromisoformat(state(hass, printer, "sensor", "estimated_finish"))
    assert finish > dt_util.utcnow()
    started = datetime.fromisoformat(state(hass, printer, "sensor", "job_started"))
    assert started <= dt_util.utcnow()
    # The job set small heater targets: the temperatures show them.
    assert float(state(hass, printer, "sensor", "nozzle_target")) == NOZZLE_TARGET_C
    assert float(state(hass, printer, "sensor", "bed_target")) == BED_TARGET_C
    assert float(state(hass, printer, "sensor", "nozzle_temperature")) > 0

    # Another job is refused while this one prints, and this one goes on.
    other = write_timed_gcode(prints / "other.gcode", 5)
    with pytest.raises(ServiceValidationError) as refused:
        await call(hass, "start_print", {**device, "file": str(other)})
    assert refused.value.translation_key == "printer_busy"
    assert str(refused.value).startswith(f"{PRINTER_NAME} is busy with a job (printing)")
    assert job(idle_octoprint)["state"] == "Printing"
    assert job(idle_octoprint)["job"]["file"]["name"] == "bracket.gcode"
    files = octoprint_files(idle_octoprint)
    assert "other.gcode" not in files

    # Resuming a job that prints is refused with the reason.
    with pytest.raises(ServiceValidationError, match="is not paused"):
        await call(hass, "resume_print", device)

    await press(hass, printer, "pause")
    assert state(hass, printer, "sensor", "state") == "paused"
    assert job(idle_octoprint)["state"] == "Paused"
    assert state(hass, printer, "binary_sensor", "printing") == STATE_OFF
    assert state(hass, printer, "sensor", "estimated_finish") == STATE_UNKNOWN
    with pytest.raises(ServiceValidationError, match="is not printing"):
        await press(hass, printer, "pause")

    response = await call(hass, "resume_print", device, return_response=True)
    assert response is not None
    assert response["state"] == "printing"
    assert job(idle_octoprint)["state"] == "Printing"

    await call(hass, "cancel_print", device)
    assert job(idle_octoprint)["state"] == "Operational"
    # OctoPrint forgets a cancelled job's state: the printer is idle again.
    assert state(hass, printer, "sensor", "state") == "idle"
    assert state(hass, printer, "sensor", "time_left") == STATE_UNKNOWN
    assert printer.update_interval == IDLE_INTERVAL


async def test_start_preheats_the_heaters(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    prints: Path,
) -> None:
    """Preheat targets are set before the job starts; a job without heater commands keeps them."""
    gcode = write_timed_gcode(prints / "preheated.gcode", 5, heaters=False)

    response = await call(
        hass,
        "start_print",
        {
            ATTR_DEVICE_ID: printer.device_id,
            "file": str(gcode),
            "nozzle_temperature": 55,
            "bed_temperature": 35,
        },
        return_response=True,
    )

    assert response is not None
    assert response["state"] == "printing"
    assert (response["nozzle"]["target"], response["bed"]["target"]) == (55, 35)
    assert float(state(hass, printer, "sensor", "nozzle_target")) == 55
    assert float(state(hass, printer, "sensor", "bed_target")) == 35
    await call(hass, "cancel_print", {ATTR_DEVICE_ID: printer.device_id})


async def test_buttons_resume_and_cancel(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    prints: Path,
) -> None:
    """The job buttons do what the actions do."""
    gcode = write_timed_gcode(prints / "clip.gcode", JOB_SECONDS)
    await call(hass, "start_print", {ATTR_DEVICE_ID: printer.device_id, "file": str(gcode)})
    await call(hass, "pause_print", {ATTR_DEVICE_ID: printer.device_id})

    await press(hass, printer, "resume")
    assert job(idle_octoprint)["state"] == "Printing"
    await press(hass, printer, "cancel")
    assert job(idle_octoprint)["state"] == "Operational"
    with pytest.raises(ServiceValidationError, match="has no job to cancel: it is idle"):
        await press(hass, printer, "cancel")


def progress(hass: HomeAssistant, printer: PrinterCoordinator) -> float:
    """Return the job's progress; OctoPrint has none yet as a job starts."""
    value = state(hass, printer, "sensor", "job_progress")
    return 0.0 if value == STATE_UNKNOWN else float(value)


def octoprint_files(octoprint: OctoPrintServer) -> set[str]:
    """Return the names of the files OctoPrint holds."""
    return {file["name"] for file in octoprint.request("GET", "/api/files/local")["files"]}


async def press(hass: HomeAssistant, printer: PrinterCoordinator, key: str) -> None:
    """Press one of the printer's buttons, as the dashboard does."""
    await hass.services.async_call(
        BUTTON_DOMAIN,
        SERVICE_PRESS,
        {ATTR_ENTITY_ID: entity_id(hass, printer, BUTTON_DOMAIN, key)},
        blocking=True,
    )


@pytest.mark.parametrize(
    "case", ["unknown_printer", "missing_file", "outside_allowlist", "relative_path", "not_gcode"]
)
async def test_bad_input_sends_nothing(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    prints: Path,
    case: str,
) -> None:
    """Bad input is refused with a translated reason before anything reaches OctoPrint."""
    router_device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, f"{printer.config_entry.unique_id}_router"), printer.config_entry.entry_id
    )
    job_file = write_timed_gcode(prints / "job.gcode", 1)
    outside = write_timed_gcode(prints.parent / "outside.gcode", 1)
    picture = prints / "photo.jpg"
    picture.write_bytes(b"\xff\xd8\xff\xd9")
    printer_id = printer.device_id
    data, key, message = {
        "unknown_printer": (
            {ATTR_DEVICE_ID: router_device.id, "file": str(job_file)},
            "unknown_printer",
            "is no printer of a loaded KITTY entry",
        ),
        "missing_file": (
            {ATTR_DEVICE_ID: printer_id, "file": str(prints / "gone.gcode")},
            "file_not_found",
            "There is no file",
        ),
        "outside_allowlist": (
            {ATTR_DEVICE_ID: printer_id, "file": str(outside)},
            "file_not_allowed",
            "Home Assistant may not read",
        ),
        "relative_path": (
            {ATTR_DEVICE_ID: printer_id, "file": "prints/job.gcode"},
            "file_not_allowed",
            "Home Assistant may not read",
        ),
        "not_gcode": (
            {ATTR_DEVICE_ID: printer_id, "file": str(picture)},
            "not_gcode",
            "is no G-code file",
        ),
    }[case]
    files_before = octoprint_files(idle_octoprint)

    with pytest.raises(ServiceValidationError) as refused:
        await call(hass, "start_print", data)

    assert refused.value.translation_key == key
    assert message in str(refused.value)
    assert octoprint_files(idle_octoprint) == files_before
    assert job(idle_octoprint)["state"] == "Operational"
    assert state(hass, printer, "sensor", "state") == "idle"


async def test_commands_without_a_job_are_refused(
    hass: HomeAssistant, printer: PrinterCoordinator, idle_octoprint: OctoPrintServer
) -> None:
    """Pausing, resuming or cancelling nothing says why; the printer stays idle."""
    device = {ATTR_DEVICE_ID: printer.device_id}
    for service, key in (
        ("pause_print", "not_printing"),
        ("resume_print", "not_paused"),
        ("cancel_print", "no_job"),
    ):
        with pytest.raises(ServiceValidationError) as refused:
            await call(hass, service, device)
        assert refused.value.translation_key == key
        assert str(refused.value).endswith("it is idle")
    with pytest.raises(ServiceValidationError, match="is no printer of a loaded KITTY entry"):
        await call(hass, "pause_print", {ATTR_DEVICE_ID: "no-such-device"})
    assert job(idle_octoprint)["state"] == "Operational"


async def test_disconnected_printer_cannot_start(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    prints: Path,
) -> None:
    """OctoPrint without its printer is reachable but disconnected, and starts nothing."""
    # The fixture connects it again after the test.
    await hass.async_add_executor_job(idle_octoprint.disconnect_printer)
    await printer.async_refresh()
    assert state(hass, printer, "sensor", "state") == "disconnected"
    # The heaters are not read while the printer is away.
    assert state(hass, printer, "sensor", "nozzle_temperature") == STATE_UNKNOWN
    gcode = write_timed_gcode(prints / "job.gcode", 1)
    with pytest.raises(ServiceValidationError, match="cannot start a print now"):
        await call(hass, "start_print", {ATTR_DEVICE_ID: printer.device_id, "file": str(gcode)})
    assert "job.gcode" not in octoprint_files(idle_octoprint)


# -- the LLM tools, diagnostics -----------------------------------------------------------


async def test_llm_tools_read_and_run_the_printer(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    prints: Path,
) -> None:
    """The status tool reads the printer; cancelling takes the user's confirmation."""
    result = await call_tool(hass, "GetPrinterStatus")
    assert not result.error
    [status] = result.data["printers"]
    assert status["printer"] == PRINTER_NAME
    assert status["state"] == "idle"
    assert status["nozzle"]["actual"] is not None

    gcode = write_timed_gcode(prints / "tool.gcode", JOB_SECONDS)
    result = await call_tool(hass, "StartPrint", file=str(gcode))
    assert not result.error, result.data
    assert result.data["status"]["state"] == "printing"
    assert job(idle_octoprint)["state"] == "Printing"

    result = await call_tool(hass, "GetPrinterStatus", printer=PRINTER_NAME.upper())
    assert result.data["printers"][0]["file"] == "tool.gcode"

    result = await call_tool(hass, "PausePrint")
    assert result.data["status"]["state"] == "paused"
    result = await call_tool(hass, "ResumePrint", printer=PRINTER_NAME)
    assert result.data["status"]["state"] == "printing"

    # Without confirm: nothing happens, and the model is told to ask.
    result = await call_tool(hass, "CancelPrint")
    assert not result.error
    assert result.data["done"] is False
    assert result.data["confirmation_required"] is True
    assert "Ask the user to confirm cancelling tool.gcode" in result.data["instruction"]
    assert job(idle_octoprint)["state"] == "Printing"

    result = await call_tool(hass, "CancelPrint", confirm=True)
    assert result.data["done"] is True
    assert job(idle_octoprint)["state"] == "Operational"

    # Errors are results the model can read: a wrong name, nothing to cancel, a bad file.
    result = await call_tool(hass, "GetPrinterStatus", printer="Prusa")
    assert result.error
    assert (
        result.data["error"]
        == f"There is no printer named Prusa. The printers are: {PRINTER_NAME}."
    )
    result = await call_tool(hass, "CancelPrint")
    assert result.error
    assert result.data["error"] == f"{PRINTER_NAME} has no job to cancel: it is idle."
    result = await call_tool(hass, "StartPrint", file=str(prints / "gone.gcode"))
    assert result.error
    assert "There is no file" in result.data["error"]


async def test_llm_tools_in_remote_mode_and_without_printers(
    hass: HomeAssistant, kitty: MockConfigEntry
) -> None:
    """Remote mode offers only the status tools and design; without printers it says so."""
    instance = await llm.async_get_api(hass, DOMAIN, llm_context())
    tools = {tool.name: tool for tool in instance.tools}
    assert tools["GetPrinterStatus"].annotations.read_only
    for name in ("StartPrint", "PausePrint", "ResumePrint", "CancelPrint"):
        assert not tools[name].annotations.read_only
    assert tools["CancelPrint"].annotations.destructive

    from custom_components.kitty.conversation import RemoteModeAPIInstance

    read_only = RemoteModeAPIInstance.of(instance)
    # Designing a part changes nothing in the house; printing it would.
    assert [tool.name for tool in read_only.tools] == [
        "GetRoutingStats",
        "GetPrinterStatus",
        "GenerateCad",
        "ShowCadArtifact",
    ]

    result = await call_tool(hass, "GetPrinterStatus")
    assert result.error
    assert result.data["error"] == "No printer is set up in KITTY, or KITTY is not loaded."


async def test_diagnostics_redact_the_key(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
) -> None:
    """The printer's settings, identity and status are there; its key is not."""
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, printer.config_entry)

    assert idle_octoprint.api_key not in json.dumps(diagnostics)
    entry = diagnostics["printers"][printer.subentry.subentry_id]
    assert entry["data"] == {
        CONF_KIND: "octoprint",
        CONF_URL: idle_octoprint.url,
        CONF_API_KEY: "**REDACTED**",
    }
    assert entry["title"] == PRINTER_NAME
    assert entry["online"] is True
    assert entry["last_error"] is None
    assert entry["info"]["version"] == "1.11.8"
    assert entry["status"]["state"] == "idle"


# -- a key that stops working, a server that goes away ------------------------------------


async def test_reauth_of_a_waiting_entry_and_of_another_printer(
    hass: HomeAssistant,
    octoprint: OctoPrintServer,
    closed_url: str,
    not_kitty_url: str,
) -> None:
    """A key that opens another printer is refused; a server without AppKeys cannot pair.

    An entry that waits for its router takes the printer's new key too, and retries.
    """
    session = async_get_clientsession(hass)
    info = await OctoPrintClient(session, octoprint.url, octoprint.api_key).info()
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id="kitty-instance",
        data={CONF_URL: closed_url, "token": "token"},
        minor_version=2,
        subentries_data=[
            octoprint_subentry(octoprint, unique_id="another-printer"),
            octoprint_subentry(octoprint, unique_id="gone-printer", url=not_kitty_url),
            octoprint_subentry(octoprint, unique_id=info.unique_id, api_key="revoked"),
        ],
    )
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    another, gone, revoked = entry.subentries.values()

    result = await entry.start_reauth_flow(hass, data={"printer_subentry_id": gone.subentry_id})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["errors"] == {"base": "app_keys_unavailable"}
    hass.config_entries.flow.async_abort(result["flow_id"])

    result = await entry.start_reauth_flow(hass, data={"printer_subentry_id": another.subentry_id})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_KEY: octoprint.api_key}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "printer_mismatch"
    assert_translated(result)

    result = await entry.start_reauth_flow(hass, data={"printer_subentry_id": revoked.subentry_id})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_KEY: octoprint.api_key}
    )
    assert result["reason"] == "reauth_successful"
    assert entry.subentries[revoked.subentry_id].data[CONF_API_KEY] == octoprint.api_key
    await hass.async_block_till_done()
    # Reloaded, and still waiting for its router.
    assert entry.state is ConfigEntryState.SETUP_RETRY


async def test_server_goes_away_and_comes_back(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stopped, OctoPrint's entities go unavailable, logged once; back, they recover."""
    await hass.async_add_executor_job(idle_octoprint.stop)
    try:
        await printer.async_refresh()
        await printer.async_refresh()

        for platform, key in (("sensor", "state"), ("binary_sensor", "printing")):
            assert state(hass, printer, platform, key) == STATE_UNAVAILABLE
        assert state(hass, printer, CAMERA_DOMAIN, "webcam") == STATE_UNAVAILABLE
        assert caplog.text.count(f"Error fetching {PRINTER_NAME} data") == 1
        assert f"{PRINTER_NAME} does not answer: Cannot reach OctoPrint" in caplog.text
        # Commands say why they cannot run.
        with pytest.raises(HomeAssistantError, match="does not answer"):
            await call(hass, "pause_print", {ATTR_DEVICE_ID: printer.device_id})
        # The coordinator keeps polling.
        assert printer.update_interval == IDLE_INTERVAL
    finally:
        await hass.async_add_executor_job(idle_octoprint.start)
        await hass.async_add_executor_job(idle_octoprint.connect_virtual_printer)

    await printer.async_refresh()
    assert state(hass, printer, "sensor", "state") == "idle"
    assert caplog.text.count(f"Fetching {PRINTER_NAME} data recovered") == 1


async def test_revoked_key_starts_reauth(
    hass: HomeAssistant,
    kitty: MockConfigEntry,
    idle_octoprint: OctoPrintServer,
) -> None:
    """A key revoked in OctoPrint asks for a new one, naming the printer; pairing gets it."""
    key = generate_app_key(idle_octoprint, "KITTY revoked")
    flow_id = await start_octoprint_flow(hass, kitty)
    assert (await configure(hass, flow_id, {CONF_URL: idle_octoprint.url, CONF_API_KEY: key}))[
        "type"
    ] is FlowResultType.CREATE_ENTRY
    printer = await loaded_printer(hass, kitty)

    idle_octoprint.request(
        "POST", "/api/plugin/appkeys", {"command": "revoke", "app": "KITTY revoked"}
    )
    await printer.async_refresh()

    assert state(hass, printer, "sensor", "state") == STATE_UNAVAILABLE
    # It stops asking OctoPrint with a key that cannot work.
    assert printer.update_interval is None
    [flow] = kitty.async_get_active_flows(hass, {SOURCE_REAUTH})
    assert flow["context"]["title_placeholders"] == {"name": PRINTER_NAME}
    result = await hass.config_entries.flow.async_configure(flow["flow_id"])
    assert result["step_id"] == "reauth_printer"
    assert result["description_placeholders"] == {
        "name": PRINTER_NAME,
        "url": idle_octoprint.url,
    }
    assert_translated(result)
    flow_id = result["flow_id"]

    result = await hass.config_entries.flow.async_configure(flow_id, {CONF_API_KEY: key})
    assert result["errors"] == {"base": "invalid_auth"}
    assert_translated(result)

    # An empty key pairs again; a denial shows the form once more.
    result = await hass.config_entries.flow.async_configure(flow_id, {})
    assert result["type"] is FlowResultType.SHOW_PROGRESS, result
    assert_translated(result)
    await hass.async_add_executor_job(lambda: idle_octoprint.decide_app_key("KITTY", allow=False))
    await wait_for(
        hass,
        lambda: hass.config_entries.flow.async_get(flow_id)["step_id"] == "reauth_paired",
        "the pairing to end",
    )
    result = await hass.config_entries.flow.async_configure(flow_id)
    assert result["errors"] == {"base": "pairing_denied"}

    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_USERNAME: idle_octoprint.username}
    )
    await hass.async_add_executor_job(lambda: idle_octoprint.decide_app_key("KITTY", allow=True))
    await wait_for(
        hass,
        lambda: hass.config_entries.flow.async_get(flow_id)["step_id"] == "reauth_paired",
        "the pairing to end",
    )
    result = await hass.config_entries.flow.async_configure(flow_id)

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert_translated(result)
    new_key = kitty.subentries[printer.subentry.subentry_id].data[CONF_API_KEY]
    assert new_key != key
    reloaded = await loaded_printer(hass, kitty)
    assert state(hass, reloaded, "sensor", "state") == "idle"


async def test_removing_the_printer_removes_its_device(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    kitty: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """A printer removed from KITTY takes its device and entities along."""
    device_id = printer.device_id
    state_sensor = entity_id(hass, printer, "sensor", "state")

    assert hass.config_entries.async_remove_subentry(kitty, printer.subentry.subentry_id)
    await wait_for(
        hass,
        lambda: kitty.state is ConfigEntryState.LOADED and not kitty.runtime_data.printers,
        "the entry to reload without the printer",
    )

    assert device_registry.async_get(device_id) is None
    assert er.async_get(hass).async_get(state_sensor) is None


JPEG_FRAMES = (b"\xff\xd8first frame\xff\xd9", b"\xff\xd8second frame\xff\xd9")
SNAPSHOT = b"\xff\xd8snapshot\xff\xd9"


@pytest.fixture
async def webcam() -> AsyncIterator[str]:
    """Serve a webcam as mjpg-streamer does: an MJPEG stream and a snapshot; yield its URL."""

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame"}
        )
        await response.prepare(request)
        for frame in JPEG_FRAMES:
            await response.write(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + frame + b"\r\n")
        return response

    async def snapshot(_: web.Request) -> web.Response:
        return web.Response(body=SNAPSHOT, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/stream", stream)
    app.router.add_get("/snapshot", snapshot)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def set_webcam(octoprint: OctoPrintServer, stream: str, snapshot: str) -> None:
    """Point OctoPrint's webcam at `stream` and `snapshot`, as its settings page does."""
    octoprint.request(
        "POST",
        "/api/settings",
        {"plugins": {"classicwebcam": {"stream": stream, "snapshot": snapshot}}},
    )


async def test_webcam_stills_and_stream(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    kitty: MockConfigEntry,
    idle_octoprint: OctoPrintServer,
    webcam: str,
) -> None:
    """The camera shows OctoPrint's webcam: the snapshot, the stream, or a frame of it."""
    set_webcam(idle_octoprint, f"{webcam}/stream", f"{webcam}/snapshot")
    try:
        printer = await add_octoprint(hass, kitty, idle_octoprint)
        camera_id = entity_id(hass, printer, CAMERA_DOMAIN, "webcam")

        image = await camera.async_get_image(hass, camera_id)
        assert image.content == SNAPSHOT
        client = await hass_client()
        response = await client.get(f"/api/camera_proxy_stream/{camera_id}")
        assert response.status == 200
        body = await response.read()
        assert all(frame in body for frame in JPEG_FRAMES)

        # Without a snapshot URL, a still is the stream's first frame.
        set_webcam(idle_octoprint, f"{webcam}/stream", "")
        assert await hass.config_entries.async_reload(kitty.entry_id)
        printer = await loaded_printer(hass, kitty)
        image = await camera.async_get_image(hass, camera_id)
        assert image.content == JPEG_FRAMES[0]

        # A webcam that does not answer says so.
        set_webcam(idle_octoprint, f"{webcam}/stream", f"{webcam}/gone")
        assert await hass.config_entries.async_reload(kitty.entry_id)
        await loaded_printer(hass, kitty)
        with pytest.raises(HomeAssistantError, match="sent no image"):
            await camera.async_get_image(hass, camera_id)
    finally:
        set_webcam(idle_octoprint, STREAM_PATH, SNAPSHOT_URL)
