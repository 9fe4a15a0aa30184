"""What only reads: the tools and intents KITTY still uses while remote mode is on.

This is the one place that decides it; the conversation agent asks it for both its
tier-0 intents and the tools of its LLM APIs. Remote mode also keeps the tools that
change nothing in the house or the shop, only adding to KITTY's own stores.
"""

from typing import Final

from homeassistant.helpers import llm

# Tools and intents known to only read, by their own name. Names a tool platform or
# a merged LLM API put in front (`homeassistant__`, `assist__`) do not count.
READ_ONLY_NAMES: Final = frozenset(
    {
        # Tools
        "GetLiveContext",
        "GetDateTime",
        "GetRoutingStats",
        "GetPrinterStatus",
        # Intents
        "HassGetState",
        "HassGetWeather",
        "HassGetCurrentDate",
        "HassGetCurrentTime",
        "HassClimateGetTemperature",
        "HassTimerStatus",
        "HassShoppingListLastItems",
        "HassNevermind",
        "HassRespond",
    }
)
# By convention a name that starts so only reads. Scripts, which may do anything,
# cannot match: their tool names are lowercase object ids.
READ_ONLY_PREFIXES: Final = ("Get", "HassGet")
# Tools that write, but only into KITTY's own stores: a new design into the CAD store,
# which never changes what it holds, or a note into a project's memory. No device,
# door or printer moves.
HOUSE_SAFE_NAMES: Final = frozenset({"GenerateCad", "AddProjectNote"})


def is_read_only_name(name: str) -> bool:
    """Return whether a tool or intent of this name only reads."""
    own_name = name.rpartition("__")[2]
    return own_name in READ_ONLY_NAMES or own_name.startswith(READ_ONLY_PREFIXES)


def is_read_only_tool(tool: llm.Tool) -> bool:
    """Return whether a tool only reads, by its name or by its own annotations."""
    return tool.annotations.read_only or is_read_only_name(tool.name)


def is_remote_mode_tool(tool: llm.Tool) -> bool:
    """Return whether remote mode offers a tool: it reads, or changes nothing in the house."""
    return is_read_only_tool(tool) or tool.name.rpartition("__")[2] in HOUSE_SAFE_NAMES
