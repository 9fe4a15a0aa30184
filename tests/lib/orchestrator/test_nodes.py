"""The node registry fed by real MQTT heartbeats and last wills, and by claims."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
import uuid

from prometheus_client import CollectorRegistry
import pytest

from kittyai.backoff import Backoff
from kittyai.catalog import ServiceName
from kittyai.contract import NODE_CAPACITY
from kittyai.contract.orchestrator import NodeCapacity, NodeInfo
from kittyai.mqtt import BrokerConfig, MqttLink, MqttState, Presence
from kittyai.orchestrator.nodes import NodeRegistry
from tests.helpers.broker import MosquittoBroker
from tests.lib.mqtt_probe import MqttProbe, on
from tests.lib.tcp_proxy import TcpProxy
from tests.lib.waiting import wait_until

STALE_S = 30.0


def capacity(node: str, *, online: bool = True, at: datetime | None = None) -> NodeCapacity:
    return NodeCapacity(
        node_id=node,
        online=online,
        capabilities=["cad", "print:mk4"],
        max_jobs=2,
        running_jobs=1,
        cpu_count=8,
        load_1m=0.5,
        memory_available_mb=2048.0,
        at=at or datetime.now(UTC),
    )


def link_to(port: int, *, presence: Presence | None = None) -> MqttLink:
    return MqttLink(
        ServiceName.ORCHESTRATOR,
        BrokerConfig("127.0.0.1", port),
        client_id=f"kitty-test-{uuid.uuid4().hex}",
        registry=CollectorRegistry(),
        backoff=Backoff(initial=0.05, maximum=0.2),
        presence=presence,
    )


@pytest.fixture
async def listening(mqtt_broker: MosquittoBroker) -> AsyncIterator[NodeRegistry]:
    """A registry following the broker, as the orchestrator's is."""
    registry = NodeRegistry(stale_after_s=STALE_S)
    link = link_to(mqtt_broker.port)
    registry.listen(link)
    link.start()
    await wait_until(lambda: link.state is MqttState.CONNECTED)
    yield registry
    await link.stop()


def listed(registry: NodeRegistry) -> dict[str, NodeInfo]:
    return {node.node_id: node for node in registry.list().nodes}


async def test_a_heartbeat_lists_the_node_and_its_last_will_lists_it_offline(
    mqtt_broker: MosquittoBroker, listening: NodeRegistry
) -> None:
    proxy = TcpProxy(mqtt_broker.port)
    await proxy.start()
    topic = NODE_CAPACITY.topic_for(node_id="bench-1")
    worker = link_to(
        proxy.port,
        presence=Presence(
            topic=topic, online=None, offline=lambda: capacity("bench-1", online=False)
        ),
    )
    worker.set_retained(topic, capacity("bench-1"))
    worker.start()

    await wait_until(lambda: "bench-1" in listed(listening))
    node = listed(listening)["bench-1"]
    assert (node.online, node.capabilities, node.max_jobs, node.running_jobs) == (
        True,
        ["cad", "print:mk4"],
        2,
        1,
    )
    # The worker's machine drops off the network: the broker sends its will.
    await proxy.cut()
    await wait_until(lambda: not listed(listening)["bench-1"].online)
    await worker.stop()


async def test_a_retained_heartbeat_is_as_old_as_it_says(mqtt_broker: MosquittoBroker) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    async with MqttProbe(mqtt_broker.port, "kitty/nodes/#") as publisher:
        await publisher.publish(
            NODE_CAPACITY.topic_for(node_id="old-box"),
            capacity("old-box", at=long_ago).model_dump_json(),
            qos=1,
            retain=True,
        )
        await publisher.expect(on(NODE_CAPACITY.topic_for(node_id="old-box")))
    registry = NodeRegistry(stale_after_s=STALE_S)
    link = link_to(mqtt_broker.port)
    registry.listen(link)

    link.start()

    await wait_until(lambda: "old-box" in listed(registry))
    node = listed(registry)["old-box"]
    await link.stop()
    # It said online two hours ago and nothing since: not online now.
    assert (node.online, node.last_seen) == (False, long_ago)


async def test_bad_or_misaddressed_heartbeats_are_ignored_and_an_empty_one_retires_the_node(
    mqtt_broker: MosquittoBroker, listening: NodeRegistry
) -> None:
    async with MqttProbe(mqtt_broker.port, "kitty/nodes/#") as publisher:
        await publisher.publish(
            NODE_CAPACITY.topic_for(node_id="liar"), capacity("other").model_dump_json(), qos=1
        )
        await publisher.publish(NODE_CAPACITY.topic_for(node_id="broken"), "{not json", qos=1)
        await publisher.publish(
            NODE_CAPACITY.topic_for(node_id="retired"), capacity("retired").model_dump_json(), qos=1
        )
        await wait_until(lambda: "retired" in listed(listening))

        await publisher.publish(NODE_CAPACITY.topic_for(node_id="retired"), "", qos=1, retain=True)
        await wait_until(lambda: "retired" not in listed(listening))

    assert listed(listening) == {}


def test_a_silent_node_is_listed_offline_and_a_claim_brings_it_back() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    registry = NodeRegistry(stale_after_s=STALE_S, clock=lambda: now)
    registry.record(capacity("quiet"))
    registry.set_claimed({"quiet": 2})

    now += timedelta(seconds=STALE_S + 1)
    silent = listed(registry)["quiet"]
    registry.record(capacity("quiet"))
    back = listed(registry)["quiet"]

    assert (silent.online, silent.claimed) == (False, 2)
    assert (back.online, back.last_seen) == (True, now)
