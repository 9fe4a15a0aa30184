"""MqttLink in-process against the real broker, with outages staged by a TCP proxy."""

import asyncio
from collections.abc import AsyncIterator
import itertools
import logging
import time

import aiomqtt
from prometheus_client import CollectorRegistry
import pytest

from kittyai.backoff import Backoff
from kittyai.catalog import ServiceName
from kittyai.contract import AVAILABILITY
from kittyai.mqtt import BrokerConfig, MqttLink, MqttState, Presence, ReceivedMessage
from tests.helpers.broker import MosquittoBroker
from tests.helpers.net import free_port
from tests.lib.mqtt_probe import MqttProbe, on, text
from tests.lib.tcp_proxy import TcpProxy
from tests.lib.waiting import wait_until

SERVICE = ServiceName.ORCHESTRATOR
ONLINE = on(AVAILABILITY.topic(SERVICE), "online")
OFFLINE = on(AVAILABILITY.topic(SERVICE), "offline")
EVENTS = "kitty/orchestrator/test/events"
PROGRESS = "kitty/orchestrator/test/progress"


def make_link(port: int | None, *, max_queued_events: int = 1000) -> MqttLink:
    return MqttLink(
        SERVICE,
        BrokerConfig("127.0.0.1", port) if port is not None else None,
        client_id="kitty-orchestrator-test",
        registry=CollectorRegistry(),
        max_queued_events=max_queued_events,
        # Fast retries keep the test short; the production defaults are slower.
        backoff=Backoff(initial=0.05, maximum=0.2),
    )


@pytest.fixture
async def proxy(mqtt_broker: MosquittoBroker) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(mqtt_broker.port)
    await proxy.start()
    yield proxy
    await proxy.cut()


def mqtt_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "kittyai.mqtt" and record.levelno == level
    ]


async def test_qos1_events_from_an_outage_arrive_in_order_after_reconnect(
    mqtt_broker: MosquittoBroker, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    link = make_link(proxy.port)
    async with MqttProbe(mqtt_broker.port, "kitty/orchestrator/#") as probe:
        link.start()
        await probe.expect(ONLINE)

        await proxy.cut()
        await wait_until(lambda: link.state is MqttState.DISCONNECTED)
        for number in range(50):
            link.publish_event(EVENTS, f"event-{number}")
        link.publish_event(PROGRESS, "50%", qos=0)
        # Let several reconnect attempts fail: still one warning, no spam.
        await asyncio.sleep(0.5)
        await proxy.start()

        await probe.expect(on(EVENTS, "event-49"))
        events = [text(message) for message in probe.messages if message.topic.value == EVENTS]
        assert events == [f"event-{number}" for number in range(50)]
        assert not [message for message in probe.messages if message.topic.value == PROGRESS]
        # The broker saw the link vanish without a DISCONNECT and sent the will.
        await probe.expect(OFFLINE)
        await link.stop()

    assert link.state is MqttState.DISCONNECTED
    assert len(mqtt_records(caplog, logging.WARNING)) == 1
    connected = [m for m in mqtt_records(caplog, logging.INFO) if m.startswith("Connected")]
    assert connected[0] == f"Connected to MQTT broker 127.0.0.1:{proxy.port}"
    # One line when it is back, saying how long the outage lasted.
    assert len(connected) == 2
    assert connected[1].startswith(f"Connected to MQTT broker 127.0.0.1:{proxy.port} after ")


async def test_a_full_queue_drops_the_oldest_events(mqtt_broker: MosquittoBroker) -> None:
    registry = CollectorRegistry()
    link = MqttLink(
        SERVICE,
        BrokerConfig("127.0.0.1", mqtt_broker.port),
        client_id="kitty-orchestrator-test",
        registry=registry,
        max_queued_events=5,
    )
    # Not started yet, so disconnected: everything waits in the queue.
    for number in range(8):
        link.publish_event(EVENTS, f"event-{number}")

    async with MqttProbe(mqtt_broker.port, EVENTS) as probe:
        link.start()
        await probe.expect(on(EVENTS, "event-7"))
        await link.stop()

    assert [text(message) for message in probe.messages] == [
        f"event-{number}" for number in range(3, 8)
    ]
    assert registry.get_sample_value("kitty_mqtt_dropped_events_total") == 3


async def test_retained_state_is_published_on_connect_and_updated_live(
    mqtt_broker: MosquittoBroker,
) -> None:
    link = make_link(mqtt_broker.port)
    link.set_retained("kitty/orchestrator/test/state", "idle")
    link.start()
    async with MqttProbe(mqtt_broker.port, "kitty/orchestrator/#") as probe:
        await probe.expect(on("kitty/orchestrator/test/state", "idle"))

        link.set_retained("kitty/orchestrator/test/state", "busy")

        await probe.expect(on("kitty/orchestrator/test/state", "busy"))
        await link.stop()
        await probe.expect(OFFLINE)

    async with MqttProbe(mqtt_broker.port, "kitty/orchestrator/#") as late:
        assert (await late.expect(on("kitty/orchestrator/test/state"))).payload == b"busy"
        await late.expect(OFFLINE)


async def test_metrics_follow_the_connection(mqtt_broker: MosquittoBroker, proxy: TcpProxy) -> None:
    registry = CollectorRegistry()
    link = MqttLink(
        SERVICE,
        BrokerConfig("127.0.0.1", proxy.port),
        client_id="kitty-orchestrator-test",
        registry=registry,
        backoff=Backoff(initial=0.05, maximum=0.2),
    )
    link.start()
    await wait_until(lambda: link.state is MqttState.CONNECTED)
    assert registry.get_sample_value("kitty_mqtt_connected") == 1

    await proxy.cut()
    await wait_until(lambda: link.state is MqttState.DISCONNECTED)
    assert registry.get_sample_value("kitty_mqtt_connected") == 0
    await proxy.start()
    await wait_until(lambda: link.state is MqttState.CONNECTED)

    assert registry.get_sample_value("kitty_mqtt_reconnects_total") == 1
    await link.stop()


async def test_stop_while_the_broker_is_unreachable_returns_quickly() -> None:
    link = make_link(free_port())
    link.start()
    await asyncio.sleep(0.2)
    started = time.monotonic()

    await link.stop()

    assert time.monotonic() - started < 1
    assert link.state is MqttState.DISCONNECTED


async def test_without_a_broker_the_link_is_disabled() -> None:
    link = make_link(None)
    link.start()
    link.publish_event(EVENTS, "nowhere")
    link.set_retained("kitty/orchestrator/test/state", "kept")

    assert link.state is MqttState.DISABLED
    await link.stop()


NODE_TOPIC = "kitty/nodes/bench-1/capacity"
INBOX = "kitty/orchestrator/test/inbox"
OTHER = "kitty/orchestrator/test/other"


def node_link(port: int) -> MqttLink:
    """A link whose presence is retained state on its own topic, as a worker's is."""
    made = itertools.count(1)
    return MqttLink(
        SERVICE,
        BrokerConfig("127.0.0.1", port),
        client_id="kitty-worker-test",
        registry=CollectorRegistry(),
        backoff=Backoff(initial=0.05, maximum=0.2),
        # Made anew for each connection attempt and the clean stop: it can carry a time.
        presence=Presence(topic=NODE_TOPIC, online=None, offline=lambda: f"gone {next(made)}"),
    )


def gone_number(message: aiomqtt.Message) -> int:
    prefix, _, number = text(message).partition(" ")
    assert prefix == "gone"
    return int(number)


async def test_a_custom_presence_is_the_will_and_the_clean_stop(
    mqtt_broker: MosquittoBroker, proxy: TcpProxy
) -> None:
    link = node_link(proxy.port)
    link.set_retained(NODE_TOPIC, "here")
    async with MqttProbe(mqtt_broker.port, "kitty/#") as probe:
        link.start()
        await probe.expect(on(NODE_TOPIC, "here"))

        await proxy.cut()
        will = await probe.expect(lambda m: m.topic.value == NODE_TOPIC and text(m) != "here")
        await proxy.start()
        await wait_until(lambda: link.state is MqttState.CONNECTED)
        await link.stop()

        # The service's availability topic is not the link's business any more.
        assert not [m for m in probe.messages if m.topic.value == AVAILABILITY.topic(SERVICE)]
    async with MqttProbe(mqtt_broker.port, NODE_TOPIC) as late:
        stopped = await late.expect(on(NODE_TOPIC))
    # The will of the first connection, then a later one said on the clean stop.
    assert gone_number(will) == 1
    assert gone_number(stopped) > 1


async def test_subscriptions_deliver_across_reconnects(
    mqtt_broker: MosquittoBroker, proxy: TcpProxy
) -> None:
    link = make_link(proxy.port)
    early: list[ReceivedMessage] = []
    late: list[ReceivedMessage] = []
    link.subscribe(INBOX + "/#", early.append)
    async with MqttProbe(mqtt_broker.port, INBOX + "/#") as sender:
        await sender.publish(INBOX + "/kept", "retained before start", qos=1, retain=True)
        await sender.publish(OTHER, "retained elsewhere", qos=1, retain=True)
        link.start()
        await wait_until(lambda: len(early) == 1)
        await sender.publish(INBOX + "/live", "live", qos=1)
        await wait_until(lambda: len(early) == 2)
        # Subscribed while connected.
        link.subscribe(OTHER, late.append)
        await wait_until(lambda: len(late) == 1)

        await proxy.cut()
        await wait_until(lambda: link.state is MqttState.DISCONNECTED)
        await proxy.start()
        await wait_until(lambda: len(early) == 3 and len(late) == 2)
        await link.stop()

    assert [(m.topic, m.payload, m.retain) for m in early] == [
        (INBOX + "/kept", b"retained before start", True),
        (INBOX + "/live", b"live", False),
        # Subscribed again after the reconnect: the broker sends the retained message again.
        (INBOX + "/kept", b"retained before start", True),
    ]
    assert [(m.payload, m.retain) for m in late] == [(b"retained elsewhere", True)] * 2


async def test_a_failing_callback_does_not_stop_the_others(mqtt_broker: MosquittoBroker) -> None:
    link = make_link(mqtt_broker.port)
    delivered: list[bytes] = []

    def broken(_message: ReceivedMessage) -> None:
        raise RuntimeError("bug in a handler")

    link.subscribe(INBOX, broken)
    link.subscribe(INBOX, lambda message: delivered.append(message.payload))
    link.start()
    await wait_until(lambda: link.state is MqttState.CONNECTED)
    async with MqttProbe(mqtt_broker.port, INBOX) as sender:
        for number in range(2):
            await sender.publish(INBOX, f"message-{number}", qos=1)
        await wait_until(lambda: len(delivered) == 2)
    await link.stop()

    assert delivered == [b"message-0", b"message-1"]
