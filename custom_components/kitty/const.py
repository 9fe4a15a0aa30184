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

# Subentry type of the shop's 3D printers, one print server per subentry.
SUBENTRY_PRINTER: Final = "printer"
# Which print server a printer runs: a `kittyai.printers.base.PrinterKind` value.
CONF_KIND: Final = "kind"
# What a printer's reauthentication carries in its data: the printer's subentry id.
CONF_PRINTER_SUBENTRY_ID: Final = "printer_subentry_id"
# The name KITTY asks OctoPrint's AppKeys for a key under; the user sees it there.
APP_NAME: Final = NAME

# A printer subentry's print monitor: the `print_monitor` section of its data.
SECTION_MONITOR: Final = "print_monitor"
# Whether KITTY watches the printer's jobs through a camera.
CONF_WATCH: Final = "watch"
# The camera to watch through; without one, the printer's own KITTY camera.
CONF_CAMERA: Final = "camera"
# Seconds between two snapshots.
CONF_INTERVAL: Final = "interval"
CONF_SENSITIVITY: Final = "sensitivity"
CONF_DETECTOR: Final = "detector"
# Where a self-hosted Obico ML API answers.
CONF_OBICO_URL: Final = "obico_url"
DEFAULT_SENSITIVITY: Final = 1.0
# Which failure detector judges the snapshots.
DETECTOR_HEURISTIC: Final = "heuristic"
# A vision model through KITTY's router: `kitty-local` keeps snapshots in the house.
DETECTOR_VISION_LOCAL: Final = "vision_local"
# A vision model through KITTY's router with `kitty-auto`: snapshots may reach the cloud.
DETECTOR_VISION_AUTO: Final = "vision_auto"
DETECTOR_OBICO: Final = "obico"
DETECTORS: Final = (
    DETECTOR_HEURISTIC,
    DETECTOR_VISION_LOCAL,
    DETECTOR_VISION_AUTO,
    DETECTOR_OBICO,
)

# A printer subentry's shop scenes: the `scenes` section of its data.
SECTION_SCENES: Final = "scenes"
# Scenes or scripts run when a job starts, pauses or fails, and finishes.
CONF_START_SCENES: Final = "start_scenes"
CONF_PAUSE_SCENES: Final = "pause_scenes"
CONF_FINISH_SCENES: Final = "finish_scenes"
# A switch or fan that runs while the printer prints, and a while after.
CONF_FUME_EXTRACTOR: Final = "fume_extractor"
# Minutes the fume extractor keeps running after a job ends.
CONF_EXTRACTOR_DELAY: Final = "extractor_delay"
DEFAULT_EXTRACTOR_DELAY: Final = 10
# A switch that powers the printer, turned off once a finished job's nozzle cooled.
CONF_POWER_PLUG: Final = "power_plug"
# The nozzle temperature in °C below which the plug may turn off.
CONF_PLUG_TEMPERATURE: Final = "plug_temperature"
DEFAULT_PLUG_TEMPERATURE: Final = 50.0

# The event fired when the print monitor paused a failing print.
EVENT_PRINT_FAILURE: Final = "kitty_print_failure"

# The entry's options: the CAD service it makes parts with, off while its URL is empty.
SECTION_CAD: Final = "cad"
# Where a part's preview is kept: served by Home Assistant at /local/kitty/cad/.
CAD_PREVIEW_DIR: Final = ("www", "kitty", "cad")
CAD_PREVIEW_URL: Final = "/local/kitty/cad"
# The entry's options: the knowledge service KITTY cites and remembers with, off while
# its URL is empty.
SECTION_RAG: Final = "rag"
# The entry's options: the orchestrator that runs KITTY's multi-step jobs, off while its
# URL is empty.
SECTION_ORCHESTRATOR: Final = "orchestrator"
# The event fired for every change of a run's state or of one of its steps' states.
EVENT_RUN: Final = "kitty_run_event"
# What an AI Task asks the router for.
AI_TASK_PROFILE: Final = PROFILE_AUTO
