"""Diagnostics of the KITTY integration."""

from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_API_KEY, CONF_TOKEN
from homeassistant.core import HomeAssistant

from kittyai.catalog import ServiceName

from . import KittyConfigEntry

TO_REDACT = {CONF_TOKEN, CONF_API_KEY}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: KittyConfigEntry
) -> dict[str, Any]:
    """Return the entry, router, services, printers, CAD and knowledge, without secrets.

    Tokens and API keys are redacted wherever they are, the CAD and knowledge tokens in
    the options too. A printer comes with its settings, who it is and what it reported
    last; the CAD service with whether it answers and its newest part; the knowledge
    service with whether it answers and its statistics.
    """
    runtime = entry.runtime_data
    # Backend names and amounts of money: the statistics hold no secrets.
    router_stats = runtime.coordinator.data[ServiceName.ROUTER].stats
    return {
        "entry": {
            "data": async_redact_data(entry.data, TO_REDACT),
            "options": async_redact_data(entry.options, TO_REDACT),
        },
        "router_info": runtime.router_info.model_dump(mode="json"),
        "router_stats": router_stats.model_dump(mode="json") if router_stats else None,
        "mqtt_connected": runtime.coordinator.mqtt_connected,
        "services": {
            service: {
                "availability": status.availability,
                "info": status.info.model_dump(mode="json") if status.info else None,
            }
            for service, status in runtime.coordinator.data.items()
        },
        "printers": {
            subentry_id: {
                "title": printer.subentry.title,
                "unique_id": printer.subentry.unique_id,
                "data": async_redact_data(printer.subentry.data, TO_REDACT),
                "online": printer.online,
                "last_error": None if printer.online else str(printer.last_exception),
                "info": asdict(printer.info) if printer.info else None,
                "status": asdict(printer.data) if printer.data else None,
            }
            for subentry_id, printer in runtime.printers.items()
        },
        "cad": _cad_diagnostics(entry),
        "knowledge": _knowledge_diagnostics(entry),
    }


def _cad_diagnostics(entry: KittyConfigEntry) -> dict[str, Any] | None:
    """Return the CAD service's state as the entry sees it; None without one."""
    latest = entry.runtime_data.latest_part
    if latest is None:
        return None
    part = latest.data
    return {
        "url": str(latest.client.url),
        "available": latest.last_update_success,
        "last_error": None if latest.last_update_success else str(latest.last_exception),
        "latest_part": part.artifact.model_dump(mode="json", exclude={"script"}) if part else None,
    }


def _knowledge_diagnostics(entry: KittyConfigEntry) -> dict[str, Any] | None:
    """Return the knowledge service's state as the entry sees it; None without one."""
    knowledge = entry.runtime_data.knowledge
    if knowledge is None:
        return None
    stats = knowledge.data
    return {
        "url": str(knowledge.client.url),
        "available": knowledge.last_update_success,
        "last_error": None if knowledge.last_update_success else str(knowledge.last_exception),
        # Counts, titles and project names: no secrets.
        "stats": stats.model_dump(mode="json") if stats else None,
    }
