"""KITTY router: the local-first confidence router with an OpenAI-compatible API."""

from kittyai.catalog import ServiceName
from kittyai.options import ServiceOptions
from kittyai.service import Service

SERVICE = Service(name=ServiceName.ROUTER, options_model=ServiceOptions, announce_discovery=True)
