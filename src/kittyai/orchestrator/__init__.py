"""KITTY orchestrator: durable runs with approvals, retries and rollback."""

from kittyai.catalog import ServiceName
from kittyai.options import ServiceOptions
from kittyai.service import Service

SERVICE = Service(name=ServiceName.ORCHESTRATOR, options_model=ServiceOptions)
