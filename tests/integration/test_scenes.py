"""The shop scenes around a real OctoPrint's jobs, with real Home Assistant entities.

The fume extractor and the smart plug are template switches over input booleans;
the scenes are a real scene and real scripts that turn input booleans on. The
Virtual Printer runs its jobs and heats its nozzle in real time; only the minutes
the extractor runs on are skipped by moving Home Assistant's clock (or, for minutes
that pass while KITTY is not loaded, by moving the switch-off's stored time back).
"""

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from homeassistant.const import ATTR_DEVICE_ID, CONF_API_KEY, CONF_URL, STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
import probatio
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.kitty.const import (
    CONF_EXTRACTOR_DELAY,
    CONF_FINISH_SCENES,
    CONF_FUME_EXTRACTOR,
    CONF_PAUSE_SCENES,
    CONF_POWER_PLUG,
    CONF_START_SCENES,
    CONF_WATCH,
    DEFAULT_PLUG_TEMPERATURE,
    DOMAIN,
    SECTION_MONITOR,
    SECTION_SCENES,
)
from custom_components.kitty.printer_coordinator import PrinterCoordinator
from tests.helpers.gcode import write_timed_gcode
from tests.helpers.octoprint import OctoPrintServer
from tests.helpers.services import ServiceProcess
from tests.integration.common import set_up_kitty, wait_for
from tests.integration.test_printer_octoprint import (
    call,
    configure,
    job,
    loaded_printer,
    start_octoprint_flow,
    state,
)

EXTRACTOR_MINUTES = 5
# Just past the extractor's run-on.
EXTRACTOR_RUN_ON = timedelta(minutes=EXTRACTOR_MINUTES, seconds=1)
# Hot enough that the nozzle is still above the plug's threshold when the job ends.
HOT_NOZZLE_C = 90.0
MARKERS = ("started", "paused", "finished", "extra", "lights")


def switch_over(name: str) -> dict[str, Any]:
    """Return a template switch that follows and sets input_boolean.<name>."""
    target = {"entity_id": f"input_boolean.{name}"}
    return {
        "name": name,
        "state": f"{{{{ is_state('input_boolean.{name}', 'on') }}}}",
        "turn_on": [{"action": "input_boolean.turn_on", "target": target}],
        "turn_off": [{"action": "input_boolean.turn_off", "target": target}],
    }


def marking(name: str) -> dict[str, Any]:
    """Return a script that turns input_boolean.<name> on."""
    return {
        "sequence": [
            {"action": "input_boolean.turn_on", "target": {"entity_id": f"input_boolean.{name}"}}
        ]
    }


@pytest.fixture
async def shop(hass: HomeAssistant) -> None:
    """The shop's entities: an extractor and a plug, a scene and scripts that leave marks."""
    booleans = {name: {"name": name} for name in (*MARKERS, "extractor")}
    booleans["plug"] = {"name": "plug", "initial": True}
    assert await async_setup_component(hass, "input_boolean", {"input_boolean": booleans})
    assert await async_setup_component(
        hass,
        "template",
        {"template": [{"switch": [switch_over("extractor"), switch_over("plug")]}]},
    )
    assert await async_setup_component(
        hass, "script", {"script": {name: marking(name) for name in MARKERS}}
    )
    assert await async_setup_component(
        hass,
        "scene",
        {"scene": [{"name": "printing", "entities": {"input_boolean.lights": STATE_ON}}]},
    )
    await hass.async_block_till_done()
    assert hass.states.get("switch.plug").state == STATE_ON


@pytest.fixture
async def printer(
    hass: HomeAssistant,
    router: ServiceProcess,
    mqtt_entry: MockConfigEntry,
    idle_octoprint: OctoPrintServer,
    shop: None,
) -> PrinterCoordinator:
    """The OctoPrint in KITTY with the shop's scenes, extractor and plug (and no monitor)."""
    entry = await set_up_kitty(hass, router)
    flow_id = await start_octoprint_flow(hass, entry)
    result = await configure(
        hass,
        flow_id,
        {
            CONF_URL: idle_octoprint.url,
            CONF_API_KEY: idle_octoprint.api_key,
            SECTION_MONITOR: {CONF_WATCH: False},
            SECTION_SCENES: {
                CONF_START_SCENES: ["scene.printing", "script.started"],
                CONF_PAUSE_SCENES: ["script.paused"],
                CONF_FINISH_SCENES: ["script.finished"],
                CONF_FUME_EXTRACTOR: "switch.extractor",
                CONF_EXTRACTOR_DELAY: EXTRACTOR_MINUTES,
                CONF_POWER_PLUG: "switch.plug",
            },
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    return await loaded_printer(hass, entry)


def is_on(hass: HomeAssistant, entity_id: str) -> bool:
    """Return whether an entity is on."""
    return hass.states.get(entity_id).state == STATE_ON


def nozzle(hass: HomeAssistant, printer: PrinterCoordinator) -> float:
    """Return the nozzle temperature KITTY shows."""
    return float(state(hass, printer, "sensor", "nozzle_temperature"))


async def finish_job(hass: HomeAssistant, printer: PrinterCoordinator, path: Path) -> None:
    """Print a short job, written to `path`, to its end: extractor on, nozzle still hot."""
    gcode = write_timed_gcode(path, 8, nozzle_c=HOT_NOZZLE_C, heaters=True)
    await call(hass, "start_print", {ATTR_DEVICE_ID: printer.device_id, "file": str(gcode)})
    await wait_for(
        hass,
        lambda: state(hass, printer, "sensor", "state") == "complete",
        "the job to finish",
        within=40,
    )
    await hass.async_block_till_done()
    assert is_on(hass, "switch.extractor")
    assert is_on(hass, "switch.plug")
    assert nozzle(hass, printer) >= DEFAULT_PLUG_TEMPERATURE


async def reload(hass: HomeAssistant, printer: PrinterCoordinator) -> PrinterCoordinator:
    """Reload KITTY's entry; return the printer it loads again."""
    entry = printer.config_entry
    assert await hass.config_entries.async_reload(entry.entry_id)
    return await loaded_printer(hass, entry)


async def test_a_job_runs_the_shop(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    prints: Path,
) -> None:
    """Start, pause and finish run their scenes; extractor and plug follow the job."""
    device = {ATTR_DEVICE_ID: printer.device_id}
    gcode = write_timed_gcode(prints / "shop.gcode", 12, nozzle_c=HOT_NOZZLE_C, heaters=True)

    await call(hass, "start_print", {**device, "file": str(gcode), "scene": "script.extra"})
    await hass.async_block_till_done()

    assert is_on(hass, "input_boolean.lights")
    assert is_on(hass, "input_boolean.started")
    assert is_on(hass, "input_boolean.extra")
    assert is_on(hass, "switch.extractor")
    assert not is_on(hass, "input_boolean.paused")

    await call(hass, "pause_print", device)
    await hass.async_block_till_done()
    assert is_on(hass, "input_boolean.paused")
    await call(hass, "resume_print", device)

    await wait_for(
        hass,
        lambda: state(hass, printer, "sensor", "state") == "complete",
        "the job to finish",
        within=40,
    )
    await hass.async_block_till_done()
    assert job(idle_octoprint)["state"] == "Operational"
    assert is_on(hass, "input_boolean.finished")
    # The nozzle is still hot: the plug stays on, and the extractor runs on.
    assert nozzle(hass, printer) >= DEFAULT_PLUG_TEMPERATURE
    assert is_on(hass, "switch.plug")
    assert is_on(hass, "switch.extractor")

    # The plug goes off once the nozzle cooled below the threshold, not before.
    for _ in range(120):
        await printer.async_refresh()
        await hass.async_block_till_done()
        if not is_on(hass, "switch.plug"):
            break
        assert nozzle(hass, printer) >= DEFAULT_PLUG_TEMPERATURE
        await asyncio.sleep(0.25)
    assert not is_on(hass, "switch.plug"), "the plug stayed on"
    assert nozzle(hass, printer) < DEFAULT_PLUG_TEMPERATURE

    # The extractor runs for its minutes after the job ended, then stops.
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(minutes=EXTRACTOR_MINUTES - 1))
    await hass.async_block_till_done()
    assert is_on(hass, "switch.extractor")
    async_fire_time_changed(
        hass, dt_util.utcnow() + timedelta(minutes=EXTRACTOR_MINUTES, seconds=1)
    )
    await hass.async_block_till_done()
    assert hass.states.get("switch.extractor").state == STATE_OFF


async def test_cancelled_job_keeps_the_plug_on(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    prints: Path,
) -> None:
    """A cancelled job runs no finish scene and keeps the plug; a new job keeps the extractor."""
    device = {ATTR_DEVICE_ID: printer.device_id}
    gcode = write_timed_gcode(prints / "cancelled.gcode", 60)

    await call(hass, "start_print", {**device, "file": str(gcode)})
    await call(hass, "cancel_print", device)
    await hass.async_block_till_done()
    assert not is_on(hass, "input_boolean.finished")
    assert is_on(hass, "switch.extractor")

    # A job that starts again before the extractor stops keeps it running.
    await call(hass, "start_print", {**device, "file": str(gcode)})
    async_fire_time_changed(
        hass, dt_util.utcnow() + timedelta(minutes=EXTRACTOR_MINUTES, seconds=1)
    )
    await hass.async_block_till_done()
    assert is_on(hass, "switch.extractor")
    await call(hass, "cancel_print", device)
    await printer.async_refresh()
    await hass.async_block_till_done()
    # Cold or not, a cancelled job's plug stays on.
    assert is_on(hass, "switch.plug")


async def test_start_scene_must_be_a_scene_or_script(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    prints: Path,
) -> None:
    """kitty.start_print refuses a scene that is no scene or script, before anything starts."""
    gcode = write_timed_gcode(prints / "refused.gcode", 5)
    with pytest.raises(probatio.Invalid, match="does not belong to domain"):
        await call(
            hass,
            "start_print",
            {ATTR_DEVICE_ID: printer.device_id, "file": str(gcode), "scene": "switch.plug"},
        )
    assert job(idle_octoprint)["state"] == "Operational"


async def test_extractor_goes_off_after_a_reload(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    prints: Path,
) -> None:
    """A reload of KITTY during the extractor's run-on keeps its switch-off, and its time."""
    await finish_job(hass, printer, prints / "reload.gcode")

    await reload(hass, printer)
    await hass.async_block_till_done()
    assert is_on(hass, "switch.extractor")

    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(minutes=EXTRACTOR_MINUTES - 1))
    await hass.async_block_till_done()
    assert is_on(hass, "switch.extractor")
    async_fire_time_changed(hass, dt_util.utcnow() + EXTRACTOR_RUN_ON)
    await hass.async_block_till_done()
    assert hass.states.get("switch.extractor").state == STATE_OFF


async def test_extractor_due_while_away_goes_off_at_start(
    hass: HomeAssistant,
    hass_storage: dict[str, Any],
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    prints: Path,
) -> None:
    """A switch-off whose time passed while KITTY was not loaded happens as KITTY starts."""
    entry = printer.config_entry
    await finish_job(hass, printer, prints / "away.gcode")

    assert await hass.config_entries.async_unload(entry.entry_id)
    # The run-on's minutes pass while KITTY is away.
    [stored] = hass_storage[f"{DOMAIN}.{entry.entry_id}.scenes"]["data"].values()
    off_at = datetime.fromisoformat(stored["extractor_off_at"])
    assert off_at > dt_util.utcnow()
    stored["extractor_off_at"] = (off_at - EXTRACTOR_RUN_ON).isoformat()
    await hass.async_block_till_done()
    assert is_on(hass, "switch.extractor")

    assert await hass.config_entries.async_setup(entry.entry_id)
    await loaded_printer(hass, entry)
    await hass.async_block_till_done()
    assert hass.states.get("switch.extractor").state == STATE_OFF


async def test_armed_plug_goes_off_after_a_reload(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    prints: Path,
) -> None:
    """A reload of KITTY while a finished job's nozzle cools still turns the plug off."""
    await finish_job(hass, printer, prints / "plug.gcode")

    printer = await reload(hass, printer)
    for _ in range(120):
        await printer.async_refresh()
        await hass.async_block_till_done()
        if not is_on(hass, "switch.plug"):
            break
        assert nozzle(hass, printer) >= DEFAULT_PLUG_TEMPERATURE
        await asyncio.sleep(0.25)
    assert not is_on(hass, "switch.plug"), "the plug stayed on"
    assert nozzle(hass, printer) < DEFAULT_PLUG_TEMPERATURE
