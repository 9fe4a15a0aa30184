"""KITTY's knowledge service from Home Assistant: its statistics, its errors, its citations.

The knowledge service is optional: an entry uses one when its options name it. Its
statistics (documents, chunks, the last ingest, the active projects) arrive over MQTT
whenever they change; a slow poll covers a broker that was away, and a service that
announces itself offline is asked at once, so its sensors do not show stale counts.
"""

from contextlib import AbstractContextManager
from typing import Any, Final, override

from homeassistant.components import mqtt
from homeassistant.core import Context, HomeAssistant, callback

from kittyai.catalog import ServiceName
from kittyai.contract import RAG_STATS
from kittyai.contract.rag import KnowledgeStats, SearchHit
from kittyai.rag_client import RagClient

from .optional_service import (
    OptionalServiceCoordinator,
    ServiceErrorKeys,
    loaded_service,
    required_service,
    translated_service_errors,
)
from .users import async_user_name

# The author of a note that no signed-in user added, e.g. from an automation.
DEFAULT_AUTHOR: Final = "Home Assistant"
# Between a citation's title, page and section; and between the headings of a section.
CITATION_SEPARATOR: Final = ", "
SECTION_SEPARATOR: Final = " \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK} "
_ERROR_KEYS: Final = ServiceErrorKeys(
    rejected="knowledge_rejected",
    invalid_auth="knowledge_invalid_auth",
    unavailable="knowledge_unavailable",
    not_configured="knowledge_not_configured",
    by_code={
        "document_not_found": "unknown_document",
        "project_not_found": "unknown_project",
    },
)


class KnowledgeCoordinator(OptionalServiceCoordinator[RagClient, KnowledgeStats | None]):
    """Keeps the knowledge service's statistics, as it pushes them; None until first read."""

    service = ServiceName.RAG
    label = "knowledge"
    error_keys = _ERROR_KEYS

    @override
    async def async_start(self) -> None:
        """Read the statistics without holding up setup, and follow what the service pushes."""
        await super().async_start()
        await self._async_follow(RAG_STATS, self._async_handle_stats)
        await self._async_follow_availability()

    @override
    async def _async_fetch(self) -> KnowledgeStats:
        """Ask the service for its statistics."""
        return await self.client.stats()

    @callback
    def _async_handle_stats(self, msg: mqtt.ReceiveMessage) -> None:
        """Take the statistics the service pushed."""
        if (stats := self._payload(KnowledgeStats, msg)) is not None:
            self.async_set_updated_data(stats)


def translated_knowledge_errors(client: RagClient) -> AbstractContextManager[None]:
    """Turn the knowledge client's errors into Home Assistant's, with translated messages."""
    return translated_service_errors(client, _ERROR_KEYS)


@callback
def loaded_knowledge(hass: HomeAssistant) -> KnowledgeCoordinator | None:
    """Return the knowledge service of the first loaded KITTY entry that has one."""
    return loaded_service(hass, KnowledgeCoordinator)


@callback
def required_knowledge(hass: HomeAssistant) -> KnowledgeCoordinator:
    """Return the knowledge service of a loaded KITTY entry; refuse when none has one."""
    return required_service(hass, KnowledgeCoordinator)


async def async_author(hass: HomeAssistant, context: Context) -> str:
    """Return who a note is from: the signed-in user who asked, else Home Assistant."""
    return await async_user_name(hass, context) or DEFAULT_AUTHOR


def citation(hit: SearchHit) -> str:
    """Return how to cite a retrieved chunk: its title, page and headings, those it has."""
    parts = [hit.title]
    if hit.page is not None:
        parts.append(f"p. {hit.page}")
    section = hit.section
    # A document's first heading is often its title, which is not said twice.
    if section and section[0].casefold() == hit.title.casefold():
        section = section[1:]
    if section:
        parts.append(SECTION_SEPARATOR.join(section))
    return CITATION_SEPARATOR.join(parts)


def hit_summary(hit: SearchHit) -> dict[str, Any]:
    """Return what an action's response says about one retrieved chunk."""
    return {
        "citation": citation(hit),
        "title": hit.title,
        "source": hit.source,
        "page": hit.page,
        "section": list(hit.section),
        "text": hit.text,
        "score": hit.score,
        "document_id": hit.document_id,
        "collection": hit.collection,
        "project": hit.project,
    }
