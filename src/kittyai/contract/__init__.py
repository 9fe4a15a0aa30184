"""The MQTT contract between the KITTY services and the Home Assistant integration.

This module is the one place the topics and payloads are written down. The JSON
schemas under `schemas/v<N>/` are generated from it (`python -m kittyai.contract`)
and a test keeps them identical, so non-Python consumers can rely on them.

Conventions (see ARCHITECTURE.md): availability and state are retained with QoS 1;
events are QoS 1 and not retained; high-rate progress is QoS 0.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kittyai.catalog import ServiceName
from kittyai.contract.cad import CadJobEvent
from kittyai.contract.orchestrator import NodeCapacity, RunEvent, RunStats
from kittyai.contract.rag import KnowledgeStats
from kittyai.contract.routing import RouterStats, RoutingDecision

CONTRACT_VERSION = 1
TOPIC_ROOT = "kitty"
# Home Assistant's MQTT birth and will topic; `online` asks publishers to re-send state.
HA_STATUS_TOPIC = "homeassistant/status"
HA_ONLINE = "online"


class Availability(StrEnum):
    """Payload of `kitty/<service>/availability`."""

    ONLINE = "online"
    OFFLINE = "offline"


class ServiceInfo(BaseModel):
    """Payload of `kitty/<service>/info`, and the body of `GET /api/info`."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="ServiceInfo")

    v: Literal[1] = Field(default=1, description="Contract version of this payload.")
    service: ServiceName
    instance_id: str = Field(
        min_length=8, max_length=64, description="Stable id of this installation."
    )
    version: str = Field(min_length=1, description="Version of the kittyai library.")
    started_at: datetime = Field(description="When this process started (UTC).")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic of the contract."""

    name: str
    pattern: str
    qos: int
    retain: bool
    payload: type[BaseModel] | type[StrEnum]
    description: str

    def topic(self, service: ServiceName) -> str:
        """Return the concrete topic for a service."""
        return self.pattern.format(service=service.value)

    def topic_for(self, **fields: str) -> str:
        """Return the concrete topic of a per-object pattern, e.g. `run_id=...`."""
        return self.pattern.format(**fields)

    @property
    def wildcard(self) -> str:
        """Return the subscription filter that matches every service or object."""
        return re.sub(r"\{[a-z_]+\}", "+", self.pattern)


AVAILABILITY = TopicSpec(
    name="availability",
    pattern=TOPIC_ROOT + "/{service}/availability",
    qos=1,
    retain=True,
    payload=Availability,
    description="`online` once connected; `offline` as the last will and on clean stop.",
)
INFO = TopicSpec(
    name="info",
    pattern=TOPIC_ROOT + "/{service}/info",
    qos=1,
    retain=True,
    payload=ServiceInfo,
    description="Who the service is; re-sent when Home Assistant comes online.",
)

ROUTER_STATS = TopicSpec(
    name="router_stats",
    pattern=TOPIC_ROOT + "/router/stats",
    qos=1,
    retain=True,
    payload=RouterStats,
    description="The router's statistics, re-sent after each decision (at most once a second).",
)
ROUTER_DECISION = TopicSpec(
    name="router_decision",
    pattern=TOPIC_ROOT + "/router/decision",
    qos=1,
    retain=False,
    payload=RoutingDecision,
    description="One event per routed turn.",
)

CAD_JOB = TopicSpec(
    name="cad_job",
    pattern=TOPIC_ROOT + "/cad/job",
    qos=1,
    retain=False,
    payload=CadJobEvent,
    description=(
        "One event per change of a CAD job: queued, running (with progress), done (with"
        " the artifact ids) or failed (with the reason)."
    ),
)

RAG_STATS = TopicSpec(
    name="rag_stats",
    pattern=TOPIC_ROOT + "/rag/stats",
    qos=1,
    retain=True,
    payload=KnowledgeStats,
    description=(
        "The knowledge base's counts, last ingest and active projects, re-sent after every"
        " ingest, deletion and note."
    ),
)

RUN_EVENT = TopicSpec(
    name="run_event",
    pattern=TOPIC_ROOT + "/runs/{run_id}/event",
    qos=1,
    retain=False,
    payload=RunEvent,
    description="One event per change of an orchestrator run or of one of its steps.",
)
RUN_STATS = TopicSpec(
    name="run_stats",
    pattern=TOPIC_ROOT + "/orchestrator/runs",
    qos=1,
    retain=True,
    payload=RunStats,
    description=(
        "Active runs, the runs awaiting approval and the last result, re-sent after every"
        " change of a run's state."
    ),
)
NODE_CAPACITY = TopicSpec(
    name="node_capacity",
    pattern=TOPIC_ROOT + "/nodes/{node_id}/capacity",
    qos=1,
    retain=True,
    payload=NodeCapacity,
    description=(
        "A worker's capabilities and headroom, re-sent every heartbeat; its last will and"
        " clean stop say `online: false`."
    ),
)

TOPICS: tuple[TopicSpec, ...] = (
    AVAILABILITY,
    INFO,
    ROUTER_STATS,
    ROUTER_DECISION,
    CAD_JOB,
    RAG_STATS,
    RUN_EVENT,
    RUN_STATS,
    NODE_CAPACITY,
)


def service_from_topic(topic: str) -> ServiceName | None:
    """Return the service a `kitty/<service>/...` topic belongs to, if any."""
    root, _, rest = topic.partition("/")
    service, _, leaf = rest.partition("/")
    if root != TOPIC_ROOT or not leaf:
        return None
    try:
        return ServiceName(service)
    except ValueError:
        return None
