"""A Klipper printer in KITTY, against a real Moonraker with a real, paced Klippy.

One Moonraker serves the module; it trusts nobody, so every call needs its API key.
Klippy runs G-code in wall-clock time: a job of dwells lasts as long as they add up
to. Moonraker pushes every change over its WebSocket, so the tests wait for pushes
and never ask KITTY to poll.
"""

from collections.abc import Iterator
import json
from pathlib import Path
from typing import Any
import urllib.request

from homeassistant.components.button import DOMAIN as BUTTON_DOMAIN, SERVICE_PRESS
from homeassistant.components.camera import DOMAIN as CAMERA_DOMAIN
from homeassistant.config_entries import (
    SOURCE_REAUTH,
    SOURCE_USER,
    ConfigEntryState,
    ConfigSubentry,
)
from homeassistant.const import (
    ATTR_DEVICE_ID,
    ATTR_ENTITY_ID,
    CONF_API_KEY,
    CONF_URL,
    STATE_ON,
    STATE_UNAVAILABLE,
)
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult, FlowResultType
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.aiohttp_client import async_get_clientsession
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.kitty.const import CONF_KIND, DOMAIN, SUBENTRY_PRINTER
from custom_components.kitty.printer_coordinator import PUSH_SAFETY_INTERVAL, PrinterCoordinator
from kittyai.printers.moonraker import MoonrakerClient
from tests.helpers.gcode import (
    KLIPPY_BED_TARGET_C,
    KLIPPY_NOZZLE_TARGET_C,
    write_klippy_gcode,
)
from tests.helpers.moonraker import SNAPSHOT_PATH, STREAM_PATH, MoonrakerServer
from tests.helpers.services import ServiceProcess
from tests.integration.common import kitty_entry, wait_for

EN: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "custom_components/kitty/translations/en.json").read_text()
)
# Changes are pushed: an entity follows the printer this fast, far within a poll.
PUSHED_WITHIN_S = 5.0


def moonraker_call(moonraker: MoonrakerServer, path: str) -> Any:
    """POST to Moonraker's own HTTP API with its key, as its web interface does."""
    request = urllib.request.Request(
        f"{moonraker.url}{path}",
        method="POST",
        headers={"X-Api-Key": str(moonraker.api_key)},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def assert_translated(result: FlowResult) -> None:
    """Fail unless what a flow shows has English strings."""
    flow = (
        EN["config"] if isinstance(result["handler"], str) else EN["config_subentries"]["printer"]
    )
    if result["type"] is FlowResultType.ABORT and result.get("translation_domain") is None:
        assert result["reason"] in flow["abort"]
    if result["type"] in (FlowResultType.FORM, FlowResultType.MENU):
        assert result["step_id"] in flow["step"]
        for error in (result.get("errors") or {}).values():
            assert error in flow["error"]


def entity_id(hass: HomeAssistant, printer: PrinterCoordinator, platform: str, key: str) -> str:
    """Return the entity id of one of the printer's entities."""
    found = er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{printer.unique_id}_{key}")
    assert found is not None, f"{platform} {key}"
    return found


def state(hass: HomeAssistant, printer: PrinterCoordinator, platform: str, key: str) -> str:
    """Return the state of one of the printer's entities."""
    return hass.states.get(entity_id(hass, printer, platform, key)).state


async def pushed(hass: HomeAssistant, printer: PrinterCoordinator, wanted: str) -> None:
    """Wait, no longer than a push takes, for the printer's state sensor to show `wanted`."""
    await wait_for(
        hass,
        lambda: state(hass, printer, "sensor", "state") == wanted,
        f"{wanted} to be pushed",
        within=PUSHED_WITHIN_S,
    )


@pytest.fixture
def ready_moonraker(moonraker: MoonrakerServer) -> Iterator[MoonrakerServer]:
    """The module's Moonraker; a job a test left running is cancelled after it."""
    yield moonraker
    with urllib.request.urlopen(
        urllib.request.Request(
            f"{moonraker.url}/printer/objects/query?print_stats",
            headers={"X-Api-Key": str(moonraker.api_key)},
        ),
        timeout=10,
    ) as response:
        stats = json.loads(response.read())["result"]["status"]["print_stats"]
    if stats["state"] in ("printing", "paused"):
        moonraker_call(moonraker, "/printer/print/cancel")


async def add_moonraker(
    hass: HomeAssistant, entry: MockConfigEntry, data: dict[str, Any]
) -> FlowResult:
    """Open the add printer flow, pick Moonraker, and submit `data`."""
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_PRINTER), context={"source": SOURCE_USER}
    )
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"next_step_id": "moonraker"}
    )
    assert result["step_id"] == "moonraker"
    assert_translated(result)
    result = await hass.config_entries.subentries.async_configure(result["flow_id"], data)
    assert_translated(result)
    return result


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


@pytest.fixture
async def printer(
    hass: HomeAssistant, kitty: MockConfigEntry, ready_moonraker: MoonrakerServer
) -> PrinterCoordinator:
    """The Klipper printer, added to KITTY through the flow with Moonraker's key."""
    result = await add_moonraker(
        hass, kitty, {CONF_URL: ready_moonraker.url, CONF_API_KEY: ready_moonraker.api_key}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    return await loaded_printer(hass, kitty)


async def test_add_with_api_key(
    hass: HomeAssistant,
    kitty: MockConfigEntry,
    ready_moonraker: MoonrakerServer,
    device_registry: dr.DeviceRegistry,
) -> None:
    """A Moonraker that trusts nobody needs its key; the printer comes with its device."""
    for data in ({}, {CONF_API_KEY: "0123456789abcdef0123456789abcdef"}):
        result = await add_moonraker(hass, kitty, {CONF_URL: ready_moonraker.url, **data})
        assert result["type"] is FlowResultType.FORM
        assert result["errors"] == {"base": "invalid_auth"}

    result = await add_moonraker(
        hass, kitty, {CONF_URL: ready_moonraker.url, CONF_API_KEY: ready_moonraker.api_key}
    )

    assert result["type"] is FlowResultType.CREATE_ENTRY
    instance_id = (ready_moonraker.data_dir / ".moonraker.uuid").read_text().strip()
    assert result["unique_id"] == instance_id
    assert result["data"] == {
        CONF_KIND: "moonraker",
        CONF_URL: ready_moonraker.url,
        CONF_API_KEY: ready_moonraker.api_key,
    }
    printer = await loaded_printer(hass, kitty)
    device = device_registry.async_get(printer.device_id)
    assert device.name == result["title"]
    assert device.manufacturer == "Moonraker"
    assert device.sw_version == "0.11.0"
    assert state(hass, printer, "sensor", "state") == "idle"
    # Klippy without a heater to read reports 0 °C.
    assert float(state(hass, printer, "sensor", "nozzle_temperature")) >= 0
    # Moonraker pushes: polls only make up for a socket that went quiet.
    assert printer.update_interval == PUSH_SAFETY_INTERVAL
    camera = hass.data["camera"].get_entity(entity_id(hass, printer, CAMERA_DOMAIN, "webcam"))
    assert camera._stream_url == f"http://127.0.0.1{STREAM_PATH}"
    assert camera._snapshot_url == f"http://127.0.0.1{SNAPSHOT_PATH}"


async def test_job_is_pushed_and_run(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    ready_moonraker: MoonrakerServer,
    tmp_path: Path,
) -> None:
    """Start, pause, resume and cancel through KITTY; changes made elsewhere are pushed."""
    hass.config.allowlist_external_dirs = {str(tmp_path)}
    gcode = write_klippy_gcode(tmp_path / "tower.gcode", 30)
    device = {ATTR_DEVICE_ID: printer.device_id}

    response = await hass.services.async_call(
        DOMAIN,
        "start_print",
        {**device, "file": str(gcode)},
        blocking=True,
        return_response=True,
    )
    assert response["state"] == "printing"
    assert response["file"] == "tower.gcode"
    assert state(hass, printer, "binary_sensor", "printing") == STATE_ON
    assert (ready_moonraker.gcodes_dir / "tower.gcode").is_file()

    # Progress and heater targets arrive by push, well within the safety poll.
    await wait_for(
        hass,
        lambda: float(state(hass, printer, "sensor", "job_progress")) > 0,
        "progress to be pushed",
        within=PUSHED_WITHIN_S * 2,
    )
    assert float(state(hass, printer, "sensor", "nozzle_target")) == KLIPPY_NOZZLE_TARGET_C
    assert float(state(hass, printer, "sensor", "bed_target")) == KLIPPY_BED_TARGET_C
    assert state(hass, printer, "sensor", "current_file") == "tower.gcode"

    with pytest.raises(ServiceValidationError, match="is busy with a job"):
        await hass.services.async_call(
            DOMAIN, "start_print", {**device, "file": str(gcode)}, blocking=True
        )

    # Paused in Moonraker's own web interface: KITTY hears it without asking.
    await hass.async_add_executor_job(moonraker_call, ready_moonraker, "/printer/print/pause")
    await pushed(hass, printer, "paused")

    await hass.services.async_call(
        BUTTON_DOMAIN,
        SERVICE_PRESS,
        {ATTR_ENTITY_ID: entity_id(hass, printer, BUTTON_DOMAIN, "resume")},
        blocking=True,
    )
    assert state(hass, printer, "sensor", "state") == "printing"
    await hass.services.async_call(DOMAIN, "pause_print", device, blocking=True)
    assert state(hass, printer, "sensor", "state") == "paused"
    await hass.services.async_call(DOMAIN, "resume_print", device, blocking=True)
    assert state(hass, printer, "sensor", "state") == "printing"

    await hass.services.async_call(DOMAIN, "cancel_print", device, blocking=True)
    assert state(hass, printer, "sensor", "state") == "cancelled"
    assert state(hass, printer, "sensor", "current_file") == "tower.gcode"


async def test_server_goes_away_and_comes_back_by_itself(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    ready_moonraker: MoonrakerServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dropped WebSocket makes the entities unavailable; KITTY reconnects on its own."""
    await hass.async_add_executor_job(ready_moonraker.stop)
    try:
        await wait_for(
            hass,
            lambda: state(hass, printer, "sensor", "state") == STATE_UNAVAILABLE,
            "the drop to show",
            within=PUSHED_WITHIN_S,
        )
    finally:
        await hass.async_add_executor_job(ready_moonraker.start)

    # Reconnecting backs off from a second: Moonraker and Klippy take a few to start.
    await wait_for(
        hass,
        lambda: state(hass, printer, "sensor", "state") == "idle",
        "KITTY to reconnect",
        within=30,
    )
    assert caplog.text.count(f"Error requesting {printer.name} data") == 1
    assert caplog.text.count(f"Fetching {printer.name} data recovered") == 1


async def test_rejected_key_starts_reauth(
    hass: HomeAssistant,
    router: ServiceProcess,
    ready_moonraker: MoonrakerServer,
    mqtt_entry: MockConfigEntry,
) -> None:
    """A key Moonraker no longer takes asks for the current one, for that printer only."""
    session = async_get_clientsession(hass)
    client = MoonrakerClient(session, ready_moonraker.url, ready_moonraker.api_key)
    info = await client.info()
    await client.close()
    entry = kitty_entry(router)
    entry.add_to_hass(hass)
    hass.config_entries.async_add_subentry(
        entry,
        ConfigSubentry(
            data={CONF_KIND: "moonraker", CONF_URL: ready_moonraker.url, CONF_API_KEY: "old"},
            subentry_type=SUBENTRY_PRINTER,
            title=info.name,
            unique_id=info.unique_id,
        ),
    )
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()

    # The entry loads; only the printer waits for its key.
    assert entry.state is ConfigEntryState.LOADED
    [printer] = entry.runtime_data.printers.values()
    assert state(hass, printer, "sensor", "state") == STATE_UNAVAILABLE
    [flow] = entry.async_get_active_flows(hass, {SOURCE_REAUTH})
    result = await hass.config_entries.flow.async_configure(flow["flow_id"])
    assert result["step_id"] == "reauth_printer"
    assert_translated(result)

    result = await hass.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_API_KEY: ready_moonraker.api_key}
    )

    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    reloaded = await loaded_printer(hass, entry)
    assert reloaded.subentry.data[CONF_API_KEY] == ready_moonraker.api_key
    assert state(hass, reloaded, "sensor", "state") in ("idle", "cancelled")
