"""Constants of the KITTY integration."""

from typing import Final

DOMAIN: Final = "kitty"
