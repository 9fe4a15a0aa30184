"""Constants of the KITTY integration."""

from types import MappingProxyType
from typing import Any, Final

from homeassistant.const import CONF_LLM_HASS_API, CONF_PROMPT
from homeassistant.helpers import llm

DOMAIN: Final = "kitty"

# Title of the config entry and manufacturer of the service devices.
NAME: Final = "KITTY"

# Subentry type of KITTY's conversation agents, one agent per subentry.
SUBENTRY_CONVERSATION: Final = "conversation"
DEFAULT_CONVERSATION_NAME: Final = "KITTY"

# What a conversation agent asks the router for: a routing profile or one backend.
CONF_PROFILE: Final = "profile"
PROFILE_AUTO: Final = "kitty-auto"
PROFILE_LOCAL: Final = "kitty-local"
PROFILE_CLOUD: Final = "kitty-cloud"
# The router's own profiles, offered when it cannot be asked for its models.
PROFILES: Final = (PROFILE_AUTO, PROFILE_LOCAL, PROFILE_CLOUD)

# The agent a new KITTY entry starts with: Assist's tools, HA's default instructions.
DEFAULT_CONVERSATION_OPTIONS: Final[MappingProxyType[str, Any]] = MappingProxyType(
    {
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
        CONF_PROMPT: llm.DEFAULT_INSTRUCTIONS_PROMPT,
        CONF_PROFILE: PROFILE_AUTO,
    }
)
