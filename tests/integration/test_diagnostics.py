"""Diagnostics of a loaded KITTY entry."""

from homeassistant.components.diagnostics import REDACTED
from homeassistant.const import CONF_TOKEN, CONF_URL
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from kittyai.catalog import SERVICES
from tests.helpers.services import ServiceProcess
from tests.integration.common import kitty_entry, router_info


@pytest.mark.usefixtures("mqtt_entry")
async def test_diagnostics_redact_the_token(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, router: ServiceProcess
) -> None:
    """The token never leaves; the router's identity and every service's status do."""
    entry = kitty_entry(router)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)

    assert diagnostics["entry"] == {
        "data": {CONF_URL: router.url, CONF_TOKEN: REDACTED},
        "options": {},
    }
    assert router.token not in str(diagnostics)
    assert diagnostics["router_info"] == router_info(router).model_dump(mode="json")
    assert diagnostics["mqtt_connected"] is True
    assert set(diagnostics["services"]) == set(SERVICES)
    assert diagnostics["services"]["router"] == {
        "availability": None,
        "info": diagnostics["router_info"],
    }
    assert diagnostics["services"]["cad"] == {"availability": None, "info": None}
