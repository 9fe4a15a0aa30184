"""The remote mode switch: it sets the entry's remote mode and survives restarts."""

from homeassistant.components.mqtt import client as mqtt_client
from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.const import (
    ATTR_ENTITY_ID,
    SERVICE_TURN_OFF,
    SERVICE_TURN_ON,
    STATE_OFF,
    STATE_ON,
    STATE_UNAVAILABLE,
)
from homeassistant.core import HomeAssistant, State
from homeassistant.helpers import device_registry as dr, entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, mock_restore_cache

from custom_components.kitty.const import DOMAIN
from tests.helpers.broker import MosquittoBroker
from tests.helpers.services import ServiceProcess
from tests.integration.common import set_up_kitty, wait_for

REMOTE_MODE = "switch.kitty_router_remote_mode"
ROUTER_CONNECTION = "binary_sensor.kitty_router_connection"

pytestmark = pytest.mark.usefixtures("mqtt_entry")


async def switch(hass: HomeAssistant, service: str) -> None:
    """Call a switch service as the UI or an automation does."""
    await hass.services.async_call(
        SWITCH_DOMAIN, service, {ATTR_ENTITY_ID: REMOTE_MODE}, blocking=True
    )


def remote_mode_on(entry: MockConfigEntry) -> bool:
    """Return what the agents of the entry obey."""
    return entry.runtime_data.remote_mode.is_on


async def test_switch_sets_remote_mode(
    hass: HomeAssistant,
    router: ServiceProcess,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Turning the switch on and off turns the entry's remote mode on and off."""
    entry = await set_up_kitty(hass, router)
    assert hass.states.get(REMOTE_MODE).state == STATE_OFF
    assert not remote_mode_on(entry)

    await switch(hass, SERVICE_TURN_ON)
    assert hass.states.get(REMOTE_MODE).state == STATE_ON
    assert remote_mode_on(entry)

    await switch(hass, SERVICE_TURN_OFF)
    assert hass.states.get(REMOTE_MODE).state == STATE_OFF
    assert not remote_mode_on(entry)

    registered = entity_registry.async_get(REMOTE_MODE)
    assert registered is not None
    assert registered.unique_id == f"{entry.unique_id}_router_remote_mode"
    assert registered.translation_key == "remote_mode"
    router_device = device_registry.async_get_device_by_identifier(
        (DOMAIN, f"{entry.unique_id}_router"), entry.entry_id
    )
    assert router_device is not None
    assert registered.device_id == router_device.id


async def test_settable_while_the_broker_is_gone(
    hass: HomeAssistant,
    router: ServiceProcess,
    mqtt_broker: MosquittoBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A safety switch must work while KITTY cannot be reached (e.g. leaving the house)."""
    monkeypatch.setattr(mqtt_client, "RECONNECT_INTERVAL_SECONDS", 0.1)
    entry = await set_up_kitty(hass, router)

    mqtt_broker.stop()
    await wait_for(
        hass, lambda: hass.states.get(ROUTER_CONNECTION).state == STATE_UNAVAILABLE, "cut off"
    )
    await switch(hass, SERVICE_TURN_ON)

    assert hass.states.get(REMOTE_MODE).state == STATE_ON
    assert remote_mode_on(entry)
    mqtt_broker.start()
    await wait_for(hass, lambda: hass.states.get(ROUTER_CONNECTION).state == STATE_OFF, "back")


@pytest.mark.parametrize("last_state", [STATE_ON, STATE_OFF])
async def test_restored_after_a_restart(
    hass: HomeAssistant, router: ServiceProcess, last_state: str
) -> None:
    """Home Assistant restarts in the mode it was in."""
    mock_restore_cache(hass, [State(REMOTE_MODE, last_state)])

    entry = await set_up_kitty(hass, router)

    assert hass.states.get(REMOTE_MODE).state == last_state
    assert remote_mode_on(entry) is (last_state == STATE_ON)


async def test_kept_when_the_entry_reloads(hass: HomeAssistant, router: ServiceProcess) -> None:
    """A reload (e.g. after adding an agent) does not drop out of remote mode."""
    entry = await set_up_kitty(hass, router)
    await switch(hass, SERVICE_TURN_ON)

    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()

    assert hass.states.get(REMOTE_MODE).state == STATE_ON
    assert remote_mode_on(entry)
