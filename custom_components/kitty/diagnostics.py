"""Diagnostics of the KITTY integration."""

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_TOKEN
from homeassistant.core import HomeAssistant

from . import KittyConfigEntry

TO_REDACT = {CONF_TOKEN}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: KittyConfigEntry
) -> dict[str, Any]:
    """Return the entry without secrets, the router's info and every service's status."""
    runtime = entry.runtime_data
    return {
        "entry": {
            "data": async_redact_data(entry.data, TO_REDACT),
            "options": async_redact_data(entry.options, TO_REDACT),
        },
        "router_info": runtime.router_info.model_dump(mode="json"),
        "mqtt_connected": runtime.coordinator.mqtt_connected,
        "services": {
            service: {
                "availability": status.availability,
                "info": status.info.model_dump(mode="json") if status.info else None,
            }
            for service, status in runtime.coordinator.data.items()
        },
    }
