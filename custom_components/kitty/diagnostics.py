"""Diagnostics of the KITTY integration."""

from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_API_KEY, CONF_TOKEN
from homeassistant.core import HomeAssistant

from kittyai.catalog import ServiceName

from . import KittyConfigEntry
from .optional_service import OptionalServiceCoordinator

TO_REDACT = {CONF_TOKEN, CONF_API_KEY}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: KittyConfigEntry
) -> dict[str, Any]:
    """Return the entry, router, services, printers, CAD, knowledge and runs, without secrets.

    Tokens and API keys are redacted wherever they are, the CAD, knowledge and
    orchestrator tokens in the options too. A printer comes with its settings, who it
    is and what it reported last; the CAD service with whether it answers and its
    newest part; the knowledge service and the orchestrator with whether they answer
    and their statistics.
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
        "orchestrator": _orchestrator_diagnostics(entry),
    }


def _cad_diagnostics(entry: KittyConfigEntry) -> dict[str, Any] | None:
    """Return the CAD service's state as the entry sees it; None without one."""
    if (latest := entry.runtime_data.latest_part) is None:
        return None
    part = latest.data
    return {
        **_service_state(latest),
        "latest_part": part.artifact.model_dump(mode="json", exclude={"script"}) if part else None,
    }


def _knowledge_diagnostics(entry: KittyConfigEntry) -> dict[str, Any] | None:
    """Return the knowledge service's state as the entry sees it; None without one."""
    if (knowledge := entry.runtime_data.knowledge) is None:
        return None
    stats = knowledge.data
    # Counts, titles and project names: no secrets.
    return {**_service_state(knowledge), "stats": stats.model_dump(mode="json") if stats else None}


def _orchestrator_diagnostics(entry: KittyConfigEntry) -> dict[str, Any] | None:
    """Return the orchestrator's state as the entry sees it; None without one."""
    if (runs := entry.runtime_data.runs) is None:
        return None
    stats = runs.data
    # Counts, run ids, templates and the reasons of their gates: no secrets.
    return {**_service_state(runs), "stats": stats.model_dump(mode="json") if stats else None}


def _service_state(service: OptionalServiceCoordinator[Any, Any]) -> dict[str, Any]:
    """Return where an optional service is and whether it answers."""
    return {
        "url": str(service.client.url),
        "available": service.last_update_success,
        "last_error": None if service.last_update_success else str(service.last_exception),
    }
