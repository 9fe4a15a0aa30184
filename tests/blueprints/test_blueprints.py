"""The blueprints load with Home Assistant's own code and do what they say."""

from datetime import timedelta
from pathlib import Path
import shutil
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.automation.config import AUTOMATION_BLUEPRINT_SCHEMA
from homeassistant.components.blueprint import BLUEPRINT_SCHEMA
from homeassistant.components.blueprint.models import Blueprint
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from homeassistant.util.yaml import load_yaml_dict
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
    async_mock_service,
)

ROOT = Path(__file__).parents[2]
BLUEPRINTS = ROOT / "blueprints"
# The schema Home Assistant validates a blueprint of each domain with.
SCHEMAS = {"automation": AUTOMATION_BLUEPRINT_SCHEMA, "script": BLUEPRINT_SCHEMA}
SOURCE_URL = "https://github.com/kitty-brain/kitty/blob/main/"

OFFLINE = "kitty/service_offline.yaml"
SENSOR = "binary_sensor.kitty_router_connection"


@pytest.mark.parametrize(
    "path",
    sorted(BLUEPRINTS.rglob("*.yaml")),
    ids=lambda path: str(path.relative_to(BLUEPRINTS)),
)
def test_blueprint_loads(path: Path) -> None:
    # Home Assistant files a blueprint under blueprints/<domain>/.
    domain = path.relative_to(BLUEPRINTS).parts[0]
    blueprint = Blueprint(
        load_yaml_dict(path), path=str(path), expected_domain=domain, schema=SCHEMAS[domain]
    )
    assert blueprint.validate() is None  # runs on the pinned Home Assistant
    # "Import blueprint" fetches this address.
    assert blueprint.metadata["source_url"] == SOURCE_URL + str(path.relative_to(ROOT))
    for key, spec in blueprint.inputs.items():
        assert spec.get("name"), key
        assert spec.get("description"), key


@pytest.fixture
def hass_config_dir(hass_tmp_config_dir: str) -> str:
    """Give Home Assistant a config dir holding our blueprints, as a user would."""
    shutil.copytree(BLUEPRINTS, Path(hass_tmp_config_dir) / "blueprints", dirs_exist_ok=True)
    return hass_tmp_config_dir


async def _offline_automation(hass: HomeAssistant, **inputs: Any) -> None:
    config = {
        "alias": "KITTY offline",
        "use_blueprint": {
            "path": OFFLINE,
            "input": {"connection_sensors": [SENSOR], **inputs},
        },
    }
    assert await async_setup_component(hass, "automation", {"automation": config})
    await hass.async_block_till_done()
    assert hass.states.get("automation.kitty_offline").state == "on"


def _set_sensor(hass: HomeAssistant, state: str) -> None:
    attributes = {"device_class": "connectivity", "friendly_name": "Router connection"}
    hass.states.async_set(SENSOR, state, attributes)


async def _wait(hass: HomeAssistant, freezer: FrozenDateTimeFactory, delta: timedelta) -> None:
    freezer.tick(delta)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()


async def test_notifies_once_the_service_stayed_offline(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory
) -> None:
    calls = async_mock_service(hass, "notify", "kitty_test")
    _set_sensor(hass, "on")
    await _offline_automation(
        hass,
        offline_for={"minutes": 10},
        notify_actions=[
            {
                "action": "notify.kitty_test",
                "data": {"title": "{{ service_name }}", "message": "{{ message }}"},
            }
        ],
    )

    went_off = dt_util.utcnow()
    _set_sensor(hass, "off")
    await hass.async_block_till_done()
    await _wait(hass, freezer, timedelta(minutes=9, seconds=59))
    assert calls == []

    await _wait(hass, freezer, timedelta(seconds=2))
    assert len(calls) == 1
    # Without a device, the sensor's own name stands for the service.
    assert calls[0].data == {
        "title": "Router connection",
        "message": f"Router connection has been offline since {dt_util.as_local(went_off):%H:%M}.",
    }


async def test_ignores_a_short_drop(hass: HomeAssistant, freezer: FrozenDateTimeFactory) -> None:
    calls = async_mock_service(hass, "persistent_notification", "create")
    _set_sensor(hass, "on")
    await _offline_automation(hass)

    _set_sensor(hass, "off")
    await _wait(hass, freezer, timedelta(minutes=2))
    _set_sensor(hass, "on")
    await _wait(hass, freezer, timedelta(minutes=30))
    assert calls == []


async def test_default_notification_names_the_service_device(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    device_registry: dr.DeviceRegistry,
    entity_registry: er.EntityRegistry,
) -> None:
    # The KITTY integration puts each service's sensor on a device named after
    # the service; the integration itself need not run for this.
    entry = MockConfigEntry(domain="kitty")
    entry.add_to_hass(hass)
    device = device_registry.async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={("kitty", "router")}, name="KITTY Router"
    )
    entity_registry.async_get_or_create(
        "binary_sensor",
        "kitty",
        "router_connection",
        suggested_object_id="kitty_router_connection",
        config_entry=entry,
        device_id=device.id,
    )
    calls = async_mock_service(hass, "persistent_notification", "create")
    _set_sensor(hass, "on")
    await _offline_automation(hass)  # default: five minutes, a notification in HA

    _set_sensor(hass, "off")
    await hass.async_block_till_done()
    await _wait(hass, freezer, timedelta(minutes=5, seconds=1))
    assert len(calls) == 1
    assert calls[0].data["title"] == "KITTY"
    assert calls[0].data["message"].startswith("KITTY Router has been offline since ")
    assert calls[0].data["notification_id"] == f"kitty_offline_{SENSOR}"
