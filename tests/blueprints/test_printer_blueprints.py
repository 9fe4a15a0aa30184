"""KITTY's printer blueprints, run as automations against real Home Assistant parts.

The print failure blueprint talks to a phone through Home Assistant's own
`mobile_app` integration: the phone registers over the HTTP API, its push
notifications go to a small push server here (the relay between Home Assistant
and the phone), and its button taps come back through its webhook, as the app
sends them.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
import shutil
import time
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from homeassistant.util.unit_system import US_CUSTOMARY_SYSTEM
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
    async_mock_service,
)

from tests.helpers.mobile_app import Phone, PushServer, settle

BLUEPRINTS = Path(__file__).parents[2] / "blueprints"
PRINT_FAILURE = "kitty/print_failure.yaml"
POWER_OFF = "kitty/printer_power_off.yaml"


@pytest.fixture
def hass_config_dir(hass_tmp_config_dir: str) -> str:
    """Give Home Assistant a config dir holding our blueprints, as a user would."""
    shutil.copytree(BLUEPRINTS, Path(hass_tmp_config_dir) / "blueprints", dirs_exist_ok=True)
    return hass_tmp_config_dir


async def _until(check: Callable[[], bool]) -> None:
    """Let Home Assistant work (network and executor included) until `check()` holds.

    Real time passes in an executor thread: the test clock may be frozen.
    """
    loop = asyncio.get_running_loop()
    for _ in range(2_000):
        if check():
            return
        await settle()
        await loop.run_in_executor(None, time.sleep, 0.005)
    raise AssertionError("Home Assistant never got there")


async def _wait(freezer: FrozenDateTimeFactory, hass: HomeAssistant, delta: timedelta) -> None:
    freezer.tick(delta)
    async_fire_time_changed(hass)
    await settle()


async def _automation(hass: HomeAssistant, path: str, inputs: dict[str, Any]) -> None:
    config = {"alias": "KITTY printer", "use_blueprint": {"path": path, "input": inputs}}
    assert await async_setup_component(hass, "automation", {"automation": config})
    await hass.async_block_till_done()
    assert hass.states.get("automation.kitty_printer").state == "on"


def _runs(hass: HomeAssistant) -> int:
    """Return how many runs of the automation are going."""
    return hass.states.get("automation.kitty_printer").attributes["current"]


# --- Print failure: resume or cancel from the phone -------------------------------------


@pytest.fixture
def printers(hass: HomeAssistant, device_registry: dr.DeviceRegistry) -> dict[str, str]:
    """Two KITTY printers' devices, as the integration registers them (it need not run)."""
    entry = MockConfigEntry(domain="kitty")
    entry.add_to_hass(hass)
    return {
        name: device_registry.async_get_or_create(
            config_entry_id=entry.entry_id,
            identifiers={("kitty", name)},
            manufacturer=manufacturer,
            name=name,
        ).id
        for name, manufacturer in (("Prusa MK4", "OctoPrint"), ("Voron 2.4", "Moonraker"))
    }


@pytest.fixture
def kitty_actions(hass: HomeAssistant) -> dict[str, list[ServiceCall]]:
    """Record the KITTY printer actions the blueprint calls.

    KITTY's own actions need a real printer and are tested against one elsewhere;
    the blueprint's contract is the call, so stand-ins record it here.
    """
    actions = {}
    for name in ("resume_print", "cancel_print"):
        assert not hass.services.has_service("kitty", name)
        actions[name] = async_mock_service(hass, "kitty", name)
    return actions


def _asking(hass: HomeAssistant) -> int:
    """Return how many runs wait for a button (each listens for both of its buttons)."""
    return hass.bus.async_listeners().get("mobile_app_notification_action", 0) // 2


def _fail(hass: HomeAssistant, printers: dict[str, str], name: str, score: float = 0.87) -> None:
    """Fire the event KITTY's print watch fires after pausing a failing print."""
    hass.bus.async_fire(
        "kitty_print_failure",
        {
            "device_id": printers[name],
            "printer": name,
            "score": score,
            "reason": "spaghetti next to the part.",
            "evidence": f"/media/kitty/evidence/{name}.jpg",
            "record": f"/media/kitty/evidence/{name}.json",
        },
    )


def _buttons(notification: dict[str, Any]) -> dict[str, str]:
    """Return a notification's buttons: title → action id."""
    return {button["title"]: button["action"] for button in notification["data"]["actions"]}


@dataclass
class Workshop:
    """KITTY's printers, the phone to ask, and what reached each."""

    phone: Phone
    push: PushServer
    printers: dict[str, str]
    actions: dict[str, list[ServiceCall]]


@pytest.fixture
def shop(
    phone: Phone,
    push_server: PushServer,
    printers: dict[str, str],
    kitty_actions: dict[str, list[ServiceCall]],
) -> Workshop:
    return Workshop(phone, push_server, printers, kitty_actions)


async def test_asks_on_the_phone_and_resumes(hass: HomeAssistant, shop: Workshop) -> None:
    await _automation(
        hass,
        PRINT_FAILURE,
        {"printers": [shop.printers["Prusa MK4"]], "notify_device": shop.phone.device_id},
    )

    _fail(hass, shop.printers, "Prusa MK4")
    await _until(lambda: _asking(hass) == 1)
    assert len(shop.push.notifications) == 1
    notification = shop.push.notifications[0]
    assert notification["push_token"] == "workshop-phone-token"
    assert notification["title"] == "Prusa MK4: print paused"
    assert notification["message"] == (
        "KITTY paused the print: it looks like it is failing "
        "(score 0.87; spaghetti next to the part). Resume or cancel?"
    )
    assert notification["data"]["tag"] == f"kitty_print_failure_{shop.printers['Prusa MK4']}"
    buttons = _buttons(notification)
    assert list(buttons) == ["Resume", "Cancel"]
    assert shop.actions == {"resume_print": [], "cancel_print": []}

    await shop.phone.tap(buttons["Resume"])
    await _until(lambda: _runs(hass) == 0)
    assert [call.data for call in shop.actions["resume_print"]] == [
        {"device_id": shop.printers["Prusa MK4"]}
    ]
    assert shop.actions["cancel_print"] == []
    # The answer ends the run: the phone is told nothing more.
    await hass.async_block_till_done()
    assert len(shop.push.notifications) == 1


async def test_cancels_only_when_asked_to(hass: HomeAssistant, shop: Workshop) -> None:
    await _automation(hass, PRINT_FAILURE, {"notify_device": shop.phone.device_id})

    _fail(hass, shop.printers, "Voron 2.4")
    await _until(lambda: _asking(hass) == 1)
    await shop.phone.tap(_buttons(shop.push.notifications[0])["Cancel"])
    await _until(lambda: _runs(hass) == 0)
    assert [call.data for call in shop.actions["cancel_print"]] == [
        {"device_id": shop.printers["Voron 2.4"]}
    ]
    assert shop.actions["resume_print"] == []


async def test_no_answer_leaves_the_print_paused(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, shop: Workshop
) -> None:
    await _automation(
        hass,
        PRINT_FAILURE,
        {
            "notify_device": shop.phone.device_id,
            "answer_timeout": {"minutes": 10},
            "resume_text": "Weiter",
            "cancel_text": "Abbrechen",
        },
    )

    _fail(hass, shop.printers, "Prusa MK4")
    await _until(lambda: _asking(hass) == 1)
    buttons = _buttons(shop.push.notifications[0])
    assert list(buttons) == ["Weiter", "Abbrechen"]

    await _wait(freezer, hass, timedelta(minutes=9, seconds=59))
    assert _asking(hass) == 1
    assert len(shop.push.notifications) == 1
    await _wait(freezer, hass, timedelta(seconds=2))
    await _until(lambda: _runs(hass) == 0)
    # The question is replaced by a note without buttons.
    assert len(shop.push.notifications) == 2
    note = shop.push.notifications[1]
    assert note["title"] == "Prusa MK4: print still paused"
    assert note["data"] == {"tag": f"kitty_print_failure_{shop.printers['Prusa MK4']}"}

    # A late tap does nothing either.
    await shop.phone.tap(buttons["Abbrechen"])
    await _wait(freezer, hass, timedelta(hours=2))
    await hass.async_block_till_done()
    assert shop.actions == {"resume_print": [], "cancel_print": []}
    assert len(shop.push.notifications) == 2


async def test_ignores_printers_not_chosen(hass: HomeAssistant, shop: Workshop) -> None:
    await _automation(
        hass,
        PRINT_FAILURE,
        {"printers": [shop.printers["Prusa MK4"]], "notify_device": shop.phone.device_id},
    )

    _fail(hass, shop.printers, "Voron 2.4")
    # Nothing waits, so everything Home Assistant would do is done.
    await hass.async_block_till_done()
    assert hass.states.get("automation.kitty_printer").attributes["last_triggered"] is None
    assert shop.push.notifications == []
    assert shop.actions == {"resume_print": [], "cancel_print": []}


async def test_two_printers_failing_get_an_answer_each(hass: HomeAssistant, shop: Workshop) -> None:
    await _automation(hass, PRINT_FAILURE, {"notify_device": shop.phone.device_id})

    _fail(hass, shop.printers, "Prusa MK4")
    _fail(hass, shop.printers, "Voron 2.4", score=0.64)
    await _until(lambda: _asking(hass) == 2)
    questions = {n["title"]: _buttons(n) for n in shop.push.notifications}
    assert set(questions) == {"Prusa MK4: print paused", "Voron 2.4: print paused"}
    prusa, voron = questions["Prusa MK4: print paused"], questions["Voron 2.4: print paused"]
    # Each run has its own buttons.
    assert len({*prusa.values(), *voron.values()}) == 4

    await shop.phone.tap(voron["Cancel"])
    await _until(lambda: _runs(hass) == 1)
    assert [call.data for call in shop.actions["cancel_print"]] == [
        {"device_id": shop.printers["Voron 2.4"]}
    ]
    assert shop.actions["resume_print"] == []

    await shop.phone.tap(prusa["Resume"])
    await _until(lambda: _runs(hass) == 0)
    assert [call.data for call in shop.actions["resume_print"]] == [
        {"device_id": shop.printers["Prusa MK4"]}
    ]
    assert len(shop.actions["cancel_print"]) == 1


async def test_a_new_failure_replaces_the_question(hass: HomeAssistant, shop: Workshop) -> None:
    await _automation(hass, PRINT_FAILURE, {"notify_device": shop.phone.device_id})

    _fail(hass, shop.printers, "Prusa MK4", score=0.7)
    await _until(lambda: _asking(hass) == 1)
    _fail(hass, shop.printers, "Prusa MK4", score=0.9)
    # The first run stops waiting; the second asks.
    await _until(lambda: len(shop.push.notifications) == 2 and _runs(hass) == 1)
    await _until(lambda: _asking(hass) == 1)
    first, second = shop.push.notifications
    assert first["data"]["tag"] == second["data"]["tag"]
    assert "score 0.90" in second["message"]

    await shop.phone.tap(_buttons(first)["Resume"])
    assert _runs(hass) == 1
    assert shop.actions["resume_print"] == []
    await shop.phone.tap(_buttons(second)["Resume"])
    await _until(lambda: _runs(hass) == 0)
    assert [call.data for call in shop.actions["resume_print"]] == [
        {"device_id": shop.printers["Prusa MK4"]}
    ]


# --- Power the printer off after the job -------------------------------------------------

STATE = "sensor.prusa_mk4_state"
NOZZLE = "sensor.prusa_mk4_nozzle_temperature"
PLUG = "switch.prusa_mk4_plug"


async def _printer_and_plug(hass: HomeAssistant) -> None:
    """A printer's state and nozzle sensors and its plug, as real entities.

    The sensors are template sensors over helpers standing for the printer, shaped
    like KITTY's: the state's values are KITTY's, the nozzle is in °C.
    """
    states = ["idle", "printing", "pausing", "paused", "cancelling", "complete", "cancelled"]
    helpers = {
        "input_select": {"printer_state": {"options": states, "initial": "printing"}},
        "input_number": {
            "nozzle": {"min": 0, "max": 300, "step": 0.1, "initial": 215, "mode": "box"}
        },
        "input_boolean": {"plug_relay": {"initial": True}},
    }
    for domain, config in helpers.items():
        assert await async_setup_component(hass, domain, {domain: config})
    template = [
        {
            "sensor": [
                {"name": "Prusa MK4 State", "state": "{{ states('input_select.printer_state') }}"},
                {
                    "name": "Prusa MK4 Nozzle temperature",
                    "state": "{{ states('input_number.nozzle') }}",
                    "unit_of_measurement": "°C",
                    "device_class": "temperature",
                    "state_class": "measurement",
                },
            ],
            "switch": [
                {
                    "name": "Prusa MK4 Plug",
                    "state": "{{ is_state('input_boolean.plug_relay', 'on') }}",
                    "turn_on": {
                        "action": "input_boolean.turn_on",
                        "target": {"entity_id": "input_boolean.plug_relay"},
                    },
                    "turn_off": {
                        "action": "input_boolean.turn_off",
                        "target": {"entity_id": "input_boolean.plug_relay"},
                    },
                }
            ],
        }
    ]
    assert await async_setup_component(hass, "template", {"template": template})
    await hass.async_block_till_done()
    assert hass.states.get(STATE).state == "printing"
    assert hass.states.get(PLUG).state == "on"


async def _power_off_automation(hass: HomeAssistant, **inputs: Any) -> None:
    await _printer_and_plug(hass)
    await _automation(
        hass,
        POWER_OFF,
        {"state_sensor": STATE, "nozzle_sensor": NOZZLE, "plug": PLUG, **inputs},
    )


async def _printer(
    hass: HomeAssistant, state: str | None = None, nozzle: float | None = None
) -> None:
    """Set the printer's nozzle temperature, then its state."""
    if nozzle is not None:
        await hass.services.async_call(
            "input_number",
            "set_value",
            {"entity_id": "input_number.nozzle", "value": nozzle},
            blocking=True,
        )
    if state is not None:
        await hass.services.async_call(
            "input_select",
            "select_option",
            {"entity_id": "input_select.printer_state", "option": state},
            blocking=True,
        )
    await settle()


def _plug(hass: HomeAssistant) -> str:
    return hass.states.get(PLUG).state


async def test_off_once_the_nozzle_cooled_after_the_job(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory
) -> None:
    await _power_off_automation(hass)

    await _printer(hass, "complete")
    assert _plug(hass) == "on"  # still at 215 °C
    for nozzle in (180, 90, 50):  # the threshold itself is not cool enough
        await _printer(hass, nozzle=nozzle)
        await _wait(freezer, hass, timedelta(minutes=5))
        assert _plug(hass) == "on"
    await _printer(hass, nozzle=49.5)
    assert _plug(hass) == "off"


async def test_a_new_job_before_it_cooled_keeps_the_plug_on(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory
) -> None:
    await _power_off_automation(hass)

    await _printer(hass, "complete")
    await _printer(hass, "printing", nozzle=210)
    await _printer(hass, nozzle=25)  # cold, but printing
    await _wait(freezer, hass, timedelta(hours=3))
    assert _plug(hass) == "on"
    # The new job going idle (not finishing) does not bring the old wait back.
    await _printer(hass, "idle")
    await _wait(freezer, hass, timedelta(hours=3))
    assert _plug(hass) == "on"


async def test_never_off_while_the_printer_is_busy(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory
) -> None:
    await _power_off_automation(hass, threshold=60)

    for state in ("printing", "pausing", "paused", "printing"):
        await _printer(hass, state, nozzle=20)
        await _wait(freezer, hass, timedelta(hours=1))
        assert _plug(hass) == "on"


async def test_waits_the_extra_delay_unless_a_job_starts(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory
) -> None:
    await _power_off_automation(hass, power_off_delay={"minutes": 5})

    await _printer(hass, "complete", nozzle=40)
    await _wait(freezer, hass, timedelta(minutes=4, seconds=59))
    assert _plug(hass) == "on"
    # The next job starts within the delay, and is cancelled at once.
    await _printer(hass, "printing")
    await _printer(hass, "cancelling")
    await _printer(hass, "cancelled")
    await _wait(freezer, hass, timedelta(minutes=10))
    assert _plug(hass) == "on"

    # The job after it completes: the plug goes off only once the delay passed.
    await _printer(hass, "printing", nozzle=210)
    await _printer(hass, "complete")
    await _printer(hass, nozzle=30)
    await _wait(freezer, hass, timedelta(minutes=4, seconds=59))
    assert _plug(hass) == "on"
    await _wait(freezer, hass, timedelta(seconds=2))
    assert _plug(hass) == "off"


async def test_gives_up_when_the_nozzle_stays_hot(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory
) -> None:
    await _power_off_automation(hass, cool_down_timeout={"minutes": 30})

    await _printer(hass, "complete", nozzle=200)
    await _wait(freezer, hass, timedelta(minutes=31))
    await _printer(hass, nozzle=25)
    assert _plug(hass) == "on"


@pytest.mark.parametrize(("when_cancelled", "plug"), [(False, "on"), (True, "off")])
async def test_after_a_cancelled_job_only_if_chosen(
    hass: HomeAssistant, when_cancelled: bool, plug: str
) -> None:
    await _power_off_automation(hass, when_cancelled=when_cancelled)

    await _printer(hass, "cancelling")
    await _printer(hass, "cancelled", nozzle=30)
    assert _plug(hass) == plug


async def test_compares_a_sensor_shown_in_fahrenheit(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory
) -> None:
    # Home Assistant shows KITTY's °C sensors in °F on a US customary system.
    hass.config.units = US_CUSTOMARY_SYSTEM
    await _power_off_automation(hass)  # 50 °C = 122 °F

    await _printer(hass, "complete", nozzle=55)
    assert float(hass.states.get(NOZZLE).state) == pytest.approx(131)
    await _wait(freezer, hass, timedelta(minutes=5))
    assert _plug(hass) == "on"
    await _printer(hass, nozzle=45)
    assert _plug(hass) == "off"
