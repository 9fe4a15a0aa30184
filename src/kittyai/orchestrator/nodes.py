"""The workers the orchestrator knows, from their MQTT heartbeats and their claims.

A worker publishes its capacity retained on `kitty/nodes/<id>/capacity` every
heartbeat, with a last will that says `online: false`, and each claim it sends
carries the same capacity. The registry keeps the newest per node, and how many
work items each holds (the work queue reports that), for `GET /api/nodes`.

A node not heard from for `stale_after_s` is listed offline even without a will:
it may have lost the broker and the orchestrator at once. Placement does not read
the registry: it hands work only to nodes that are asking for it.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
import logging

from pydantic import ValidationError

from kittyai.contract import NODE_CAPACITY
from kittyai.contract.orchestrator import NodeCapacity, NodeInfo, NodeList
from kittyai.mqtt import MqttLink, ReceivedMessage
from kittyai.orchestrator.database import utc_now
from kittyai.validation import describe_errors

_LOGGER = logging.getLogger(__name__)

type Clock = Callable[[], datetime]


@dataclass(slots=True)
class _Node:
    capacity: NodeCapacity
    last_seen: datetime


class NodeRegistry:
    """The newest capacity and the number of held items of every worker seen."""

    def __init__(self, *, stale_after_s: float, clock: Clock = utc_now) -> None:
        """List a node offline once it has been silent for `stale_after_s`."""
        self._stale_after = timedelta(seconds=stale_after_s)
        self._clock = clock
        self._nodes: dict[str, _Node] = {}
        self._claimed: dict[str, int] = {}

    def listen(self, mqtt: MqttLink) -> None:
        """Follow every node's capacity topic on `mqtt`, retained messages included."""
        mqtt.subscribe(NODE_CAPACITY.wildcard, self._on_capacity, qos=NODE_CAPACITY.qos)

    def record(self, capacity: NodeCapacity, *, seen_at: datetime | None = None) -> None:
        """Keep `capacity` as the node's newest, seen at `seen_at` (default: now)."""
        self._nodes[capacity.node_id] = _Node(capacity, seen_at or self._clock())

    def set_claimed(self, claimed: Mapping[str, int]) -> None:
        """Set how many items each node holds; nodes not named hold none."""
        self._claimed = dict(claimed)

    def list(self) -> NodeList:
        """Return every node seen, by id; silent ones are listed offline."""
        now = self._clock()
        return NodeList(
            nodes=[
                NodeInfo(
                    **node.capacity.model_dump(exclude={"online"}),
                    online=node.capacity.online and now - node.last_seen <= self._stale_after,
                    last_seen=node.last_seen,
                    claimed=self._claimed.get(node_id, 0),
                )
                for node_id, node in sorted(self._nodes.items())
            ]
        )

    def _on_capacity(self, message: ReceivedMessage) -> None:
        node_id = message.topic.split("/")[-2]
        if not message.payload:
            # An empty retained message clears the topic: the node was retired.
            self._nodes.pop(node_id, None)
            return
        try:
            capacity = NodeCapacity.model_validate_json(message.payload)
        except ValidationError as err:
            _LOGGER.warning("Ignoring a bad capacity of node %s: %s", node_id, describe_errors(err))
            return
        if capacity.node_id != node_id:
            _LOGGER.warning(
                "Ignoring a capacity for node %s sent on the topic of node %s",
                capacity.node_id,
                node_id,
            )
            return
        now = self._clock()
        # A retained message is as old as the node says, not as old as this connection.
        seen_at = min(capacity.at, now) if message.retain else now
        known = self._nodes.get(node_id)
        if known is not None and known.last_seen > seen_at:
            return
        self.record(capacity, seen_at=seen_at)
