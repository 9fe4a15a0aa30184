"""Setup and unload of a KITTY entry against a real router and HA's real MQTT."""

from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState
from homeassistant.const import STATE_OFF, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
import pytest

from custom_components.kitty.const import DOMAIN
from kittyai.catalog import SERVICES, ServiceName
from tests.helpers.services import ServiceProcess
from tests.integration.common import kitty_entry, router_info


@pytest.mark.usefixtures("mqtt_entry")
async def test_setup_and_unload(
    hass: HomeAssistant,
    router: ServiceProcess,
    device_registry: dr.DeviceRegistry,
    entity_registry: er.EntityRegistry,
) -> None:
    """A device and a connectivity sensor per service; unloading ends them."""
    info = router_info(router)
    entry = kitty_entry(router)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.router_info == info

    router_device = device_registry.async_get_device_by_identifier(
        (DOMAIN, f"{info.instance_id}_router"), entry.entry_id
    )
    assert router_device is not None
    assert router_device.name == SERVICES[ServiceName.ROUTER].title
    assert router_device.manufacturer == "KITTY"
    assert router_device.sw_version == info.version
    assert router_device.configuration_url == router.url
    assert router_device.entry_type is dr.DeviceEntryType.SERVICE

    entity_ids = []
    for service, spec in SERVICES.items():
        device = device_registry.async_get_device_by_identifier(
            (DOMAIN, f"{info.instance_id}_{service}"), entry.entry_id
        )
        assert device is not None
        assert device.name == spec.title
        if service is not ServiceName.ROUTER:
            assert device.via_device_id == router_device.id
            assert device.sw_version is None
        entity_id = entity_registry.async_get_entity_id(
            "binary_sensor", DOMAIN, f"{info.instance_id}_{service}_connection"
        )
        assert entity_id is not None
        assert entity_registry.async_get(entity_id).device_id == device.id
        # This router runs without MQTT, so no service ever announced itself.
        assert hass.states.get(entity_id).state == STATE_OFF
        entity_ids.append(entity_id)
    # The names the dashboard and blueprint of this repository rely on.
    assert entity_ids == [
        f"binary_sensor.kitty_{name}_connection"
        for name in ("router", "knowledge", "cad", "orchestrator")
    ]

    assert await hass.config_entries.async_unload(entry.entry_id)
    assert entry.state is ConfigEntryState.NOT_LOADED
    for entity_id in entity_ids:
        assert hass.states.get(entity_id).state == STATE_UNAVAILABLE


async def test_router_down_retries(
    hass: HomeAssistant, router: ServiceProcess, closed_url: str
) -> None:
    """A router that does not answer puts the entry into retry."""
    entry = kitty_entry(router, url=closed_url)
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert entry.error_reason_translation_key == "router_unavailable"
    assert entry.reason.startswith(f"The KITTY router at {closed_url} is not ready")


async def test_wrong_token_starts_reauth(hass: HomeAssistant, router: ServiceProcess) -> None:
    """A rejected token is a setup error that asks the user for a new one."""
    entry = kitty_entry(router, token="revoked-token")
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.error_reason_translation_key == "invalid_auth"
    [flow] = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert flow["context"]["source"] == SOURCE_REAUTH
    assert flow["context"]["entry_id"] == entry.entry_id


async def test_no_mqtt_retries(hass: HomeAssistant, router: ServiceProcess) -> None:
    """Without HA's MQTT integration KITTY cannot follow its services: retry."""
    entry = kitty_entry(router)
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert entry.error_reason_translation_key == "mqtt_unavailable"
