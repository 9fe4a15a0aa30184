"""Service actions of the KITTY integration: ask KITTY, and hear how it answered."""

from typing import Final

from homeassistant.components import conversation
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import config_validation as cv, entity_registry as er
import probatio

from .const import DOMAIN
from .turn import KittyTurn, current_turn

SERVICE_ASK: Final = "ask"
ATTR_TEXT: Final = "text"
ATTR_AGENT_ID: Final = "agent_id"
ATTR_CONVERSATION_ID: Final = "conversation_id"
ATTR_LANGUAGE: Final = "language"

ASK_SCHEMA: Final = probatio.Schema(
    {
        probatio.Required(ATTR_TEXT): cv.string,
        probatio.Optional(ATTR_AGENT_ID): cv.entity_id,
        # The router keeps conversation ids of up to 128 characters.
        probatio.Optional(ATTR_CONVERSATION_ID): probatio.All(
            cv.string, probatio.Length(min=1, max=128)
        ),
        probatio.Optional(ATTR_LANGUAGE): cv.string,
    }
)


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register KITTY's service actions."""
    hass.services.async_register(
        DOMAIN,
        SERVICE_ASK,
        _async_ask,
        schema=ASK_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )


async def _async_ask(call: ServiceCall) -> ServiceResponse:
    """Run one turn through a KITTY agent; return its answer and how it was routed."""
    agents = _loaded_agents(call.hass)
    if not agents:
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="no_agent")
    agent_id: str = call.data.get(ATTR_AGENT_ID, agents[0])
    if agent_id not in agents:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="not_kitty_agent",
            translation_placeholders={"agent_id": agent_id},
        )

    token = current_turn.set(turn := KittyTurn())
    try:
        result = await conversation.async_converse(
            call.hass,
            call.data[ATTR_TEXT],
            call.data.get(ATTR_CONVERSATION_ID),
            call.context,
            language=call.data.get(ATTR_LANGUAGE),
            agent_id=agent_id,
        )
    finally:
        current_turn.reset(token)
    # The conversation turned the agent's error into an answer; the action fails with it.
    if turn.error is not None:
        raise turn.error
    return {
        "response": result.response.speech.get("plain", {}).get("speech", ""),
        "conversation_id": result.conversation_id,
        "route": turn.route(),
    }


@callback
def _loaded_agents(hass: HomeAssistant) -> list[str]:
    """Return the entity ids of the KITTY agents that can answer now, in setup order."""
    registry = er.async_get(hass)
    return [
        registry_entry.entity_id
        for entry in hass.config_entries.async_loaded_entries(DOMAIN)
        for registry_entry in er.async_entries_for_config_entry(registry, entry.entry_id)
        if registry_entry.domain == conversation.DOMAIN and not registry_entry.disabled
    ]
