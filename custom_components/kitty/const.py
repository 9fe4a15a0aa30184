"""Constants of the KITTY integration."""

from typing import Final

DOMAIN: Final = "kitty"

# Title of the config entry and manufacturer of the service devices.
NAME: Final = "KITTY"
