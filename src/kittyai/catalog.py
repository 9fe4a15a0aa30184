"""The KITTY services: their names, titles and default HTTP ports."""

from dataclasses import dataclass
from enum import StrEnum


class ServiceName(StrEnum):
    """A KITTY service, as named in MQTT topics and `python -m kittyai.<name>`."""

    ROUTER = "router"
    CAD = "cad"
    ORCHESTRATOR = "orchestrator"
    RAG = "rag"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What is fixed about one service."""

    name: ServiceName
    title: str
    default_port: int


SERVICES: dict[ServiceName, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec(ServiceName.ROUTER, "KITTY Router", 8770),
        ServiceSpec(ServiceName.RAG, "KITTY Knowledge", 8771),
        ServiceSpec(ServiceName.CAD, "KITTY CAD", 8772),
        ServiceSpec(ServiceName.ORCHESTRATOR, "KITTY Orchestrator", 8773),
    )
}
