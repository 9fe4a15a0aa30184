"""KITTY CAD: parametric and cloud CAD, artifacts with lineage."""

from kittyai.catalog import ServiceName
from kittyai.options import ServiceOptions
from kittyai.service import Service

SERVICE = Service(name=ServiceName.CAD, options_model=ServiceOptions)
