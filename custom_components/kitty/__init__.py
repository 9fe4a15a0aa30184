"""The KITTY integration: the AI brain of a home lab or maker workshop."""

from dataclasses import dataclass, field
import logging
from types import MappingProxyType
from typing import Any

from homeassistant.config_entries import ConfigEntry, ConfigSubentry
from homeassistant.const import CONF_TOKEN, CONF_URL, Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryAuthFailed, ConfigEntryNotReady
from homeassistant.helpers import config_validation as cv, llm
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.typing import ConfigType

from kittyai.cad_client import CadClient
from kittyai.client import KittyAuthError, KittyClient, KittyError
from kittyai.contract import ServiceInfo
from kittyai.orchestrator_client import OrchestratorClient
from kittyai.rag_client import RagClient

from .cad import LatestPartCoordinator
from .const import (
    DEFAULT_CONVERSATION_NAME,
    DEFAULT_CONVERSATION_OPTIONS,
    DOMAIN,
    SECTION_CAD,
    SECTION_ORCHESTRATOR,
    SECTION_RAG,
    SUBENTRY_CONVERSATION,
    SUBENTRY_PRINTER,
)
from .coordinator import KittyCoordinator
from .knowledge import KnowledgeCoordinator
from .llm_api import KittyLLMAPI
from .memory import ConversationMemory
from .optional_service import OptionalServiceCoordinator, optional_service_client
from .print_monitor import MonitorSettings, PrintMonitor
from .printer_coordinator import PrinterCoordinator
from .remote_mode import RemoteMode
from .runs import RunsCoordinator
from .scenes import PrinterScenes, SceneStore
from .services import async_setup_services

_LOGGER = logging.getLogger(__name__)

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)
PLATFORMS: list[Platform] = [
    Platform.AI_TASK,
    Platform.BINARY_SENSOR,
    Platform.BUTTON,
    Platform.CAMERA,
    Platform.CONVERSATION,
    Platform.IMAGE,
    Platform.SENSOR,
    Platform.SWITCH,
]


@dataclass(slots=True)
class KittyRuntimeData:
    """What a loaded KITTY entry holds."""

    client: KittyClient
    router_info: ServiceInfo
    coordinator: KittyCoordinator
    # The coordinator of every printer, by its subentry id.
    printers: dict[str, PrinterCoordinator]
    # The print monitor of every printer that is watched, by its subentry id.
    monitors: dict[str, PrintMonitor]
    # The shop scenes of every printer, by its subentry id.
    scenes: dict[str, PrinterScenes]
    # The newest part of the CAD service the entry's options name; None without one.
    latest_part: LatestPartCoordinator | None = None
    # The statistics of the knowledge service the entry's options name; None without one.
    knowledge: KnowledgeCoordinator | None = None
    # The runs of the orchestrator the entry's options name; None without one.
    runs: RunsCoordinator | None = None
    remote_mode: RemoteMode = field(default_factory=RemoteMode)

    @property
    def optional_services(self) -> tuple[OptionalServiceCoordinator[Any, Any], ...]:
        """Return the coordinators of the services the entry uses besides the router."""
        return tuple(
            service
            for service in (self.latest_part, self.knowledge, self.runs)
            if service is not None
        )

    @property
    def cad(self) -> CadClient | None:
        """Return the client of the entry's CAD service; None without one."""
        return self.latest_part.client if self.latest_part is not None else None

    @property
    def rag(self) -> RagClient | None:
        """Return the client of the entry's knowledge service; None without one."""
        return self.knowledge.client if self.knowledge is not None else None

    @property
    def orchestrator(self) -> OrchestratorClient | None:
        """Return the client of the entry's orchestrator; None without one."""
        return self.runs.client if self.runs is not None else None


type KittyConfigEntry = ConfigEntry[KittyRuntimeData]


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Offer KITTY's tools to every LLM agent, once, whether or not an entry is loaded."""
    llm.async_register_api(hass, KittyLLMAPI(hass))
    async_setup_services(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: KittyConfigEntry) -> bool:
    """Connect to the router, follow the services over MQTT, reach printers and the others."""
    url: str = entry.data[CONF_URL]
    client = KittyClient(async_get_clientsession(hass), url, entry.data[CONF_TOKEN])
    try:
        router_info = await client.get_info()
    except KittyAuthError as err:
        raise ConfigEntryAuthFailed(
            translation_domain=DOMAIN,
            translation_key="invalid_auth",
            translation_placeholders={"url": url},
        ) from err
    except KittyError as err:
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="router_unavailable",
            translation_placeholders={"url": url, "error": str(err)},
        ) from err

    coordinator = KittyCoordinator(hass, entry, router_info)
    # The devices exist before the first MQTT message can update them.
    coordinator.async_register_devices()
    await coordinator.async_config_entry_first_refresh()
    printers = {
        subentry.subentry_id: PrinterCoordinator(hass, entry, subentry)
        for subentry in entry.subentries.values()
        if subentry.subentry_type == SUBENTRY_PRINTER
    }
    # Only printers whose monitor is on have one, and its entities.
    monitors = {
        subentry_id: PrintMonitor(hass, entry, printer)
        for subentry_id, printer in printers.items()
        if MonitorSettings.of(printer.subentry.data).watch
    }
    scene_store = await SceneStore.async_load(hass, entry)
    scenes = {
        subentry_id: PrinterScenes(hass, entry, printer, scene_store)
        for subentry_id, printer in printers.items()
    }
    cad = optional_service_client(hass, entry.options, SECTION_CAD, CadClient)
    latest_part = None if cad is None else LatestPartCoordinator(hass, entry, cad)
    rag = optional_service_client(hass, entry.options, SECTION_RAG, RagClient)
    knowledge = None if rag is None else KnowledgeCoordinator(hass, entry, rag)
    orchestrator = optional_service_client(
        hass, entry.options, SECTION_ORCHESTRATOR, OrchestratorClient
    )
    runs = None if orchestrator is None else RunsCoordinator(hass, entry, orchestrator)
    entry.runtime_data = KittyRuntimeData(
        client,
        router_info,
        coordinator,
        printers,
        monitors,
        scenes,
        latest_part,
        knowledge,
        runs,
    )
    for subentry_id, printer in printers.items():
        printer.async_start()
        scenes[subentry_id].async_start()
    for monitor in monitors.values():
        monitor.async_start()
    # The CAD service, the knowledge service and the orchestrator are optional: one
    # that is down only makes its entities unavailable and its actions fail.
    for optional in entry.runtime_data.optional_services:
        await optional.async_start()
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    entry.async_on_unload(entry.add_update_listener(_async_update_listener))
    return True


async def async_unload_entry(hass: HomeAssistant, entry: KittyConfigEntry) -> bool:
    """Unload the platforms; MQTT subscriptions and printers end through `async_on_unload`."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def async_migrate_entry(hass: HomeAssistant, entry: KittyConfigEntry) -> bool:
    """Bring an entry made by an older KITTY up to date.

    Home Assistant itself refuses entries of a newer KITTY (a higher version).
    """
    if entry.minor_version == 1:
        # 1.2 added conversation agents: an older entry gets the one a new entry gets.
        hass.config_entries.async_add_subentry(
            entry,
            ConfigSubentry(
                data=MappingProxyType(dict(DEFAULT_CONVERSATION_OPTIONS)),
                subentry_type=SUBENTRY_CONVERSATION,
                title=DEFAULT_CONVERSATION_NAME,
                unique_id=None,
            ),
        )
        hass.config_entries.async_update_entry(entry, minor_version=2)
        _LOGGER.debug("Migrated %s to version 1.2", entry.title)
    return True


async def async_remove_entry(hass: HomeAssistant, entry: KittyConfigEntry) -> None:
    """Forget the conversations and the printers' pending switch-offs of a removed entry."""
    await ConversationMemory.async_remove(hass, entry.entry_id)
    await SceneStore.async_remove(hass, entry.entry_id)


async def _async_update_listener(hass: HomeAssistant, entry: KittyConfigEntry) -> None:
    """Reload the entry when its data, options or subentries change."""
    await hass.config_entries.async_reload(entry.entry_id)
