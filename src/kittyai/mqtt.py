"""The MQTT link of a service: availability, retained state, events, reconnects.

aiomqtt has no automatic reconnect, so the link runs its own loop: connect, set
the last will, announce (`online` plus every retained state), serve, and on any
connection error wait with capped exponential backoff and start over. Callers
never await the broker: `publish_event` and `set_retained` only hand messages to
the link, which sends them in order whenever it is connected.

What the link announces about its owner is its `Presence`: by default the
service's availability topic (`online`, and `offline` as the last will and on a
clean stop). A worker passes its own: retained capacity whose last will says
`online: false`. `subscribe` delivers incoming messages to a callback, and the
link subscribes again after every reconnect.
"""

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
import logging
import ssl
import time
from typing import Self

import aiomqtt
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel

from kittyai.backoff import Backoff, sleep_unless_set
from kittyai.catalog import ServiceName
from kittyai.contract import AVAILABILITY, HA_ONLINE, HA_STATUS_TOPIC, Availability
from kittyai.options import MqttOptions
from kittyai.supervisor import MqttService

_LOGGER = logging.getLogger(__name__)

type MqttPayload = str | bytes | BaseModel

DEFAULT_MAX_QUEUED_EVENTS = 1000
# A dead broker behind a silent network is noticed after 1.5 keepalives.
KEEPALIVE_SECONDS = 30
# How long a clean stop may take to flush events and publish `offline`.
STOP_TIMEOUT_SECONDS = 5.0
# Retained state is QoS 1 by the contract's convention.
RETAINED_QOS = 1


class MqttState(StrEnum):
    """What `/health` reports about the link."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where and how to connect to the MQTT broker."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V311

    @classmethod
    def from_options(cls, options: MqttOptions) -> Self:
        """Return the broker named in the service's options."""
        return cls(
            host=options.host,
            port=options.port,
            username=options.username,
            password=options.password.get_secret_value() if options.password else None,
            tls=options.tls,
        )

    @classmethod
    def from_supervisor(cls, service: MqttService) -> Self:
        """Return the broker the Supervisor provides."""
        return cls(
            host=service.host,
            port=service.port,
            username=service.username or None,
            password=service.password.get_secret_value() if service.password else None,
            tls=service.ssl,
            protocol=(
                aiomqtt.ProtocolVersion.V5
                if service.protocol.startswith("5")
                else aiomqtt.ProtocolVersion.V311
            ),
        )

    def __str__(self) -> str:
        """Return `host:port`, for logs."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Presence:
    """Where and how the link tells others that its owner is up or gone; always retained."""

    topic: str
    # Published on every connect; None when retained state on `topic` says it instead.
    online: MqttPayload | None
    # The last will, and what a clean stop publishes. Called at every connect and at
    # the stop, so the payload can carry the time it was made.
    offline: Callable[[], MqttPayload]
    qos: int = RETAINED_QOS

    @classmethod
    def availability(cls, service: ServiceName) -> Self:
        """Return the presence of a service: `online`/`offline` on its availability topic."""
        return cls(
            topic=AVAILABILITY.topic(service),
            online=Availability.ONLINE.value,
            offline=lambda: Availability.OFFLINE.value,
            qos=AVAILABILITY.qos,
        )


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message the broker delivered on a subscription."""

    topic: str
    payload: bytes
    # True when it came from the broker's retained store rather than live.
    retain: bool


# Called on the link's task for each matching message; it must not block.
type MessageCallback = Callable[[ReceivedMessage], None]


@dataclass(frozen=True, slots=True)
class _Subscription:
    topic_filter: str
    callback: MessageCallback
    qos: int


class _LinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connected = Gauge(
            "kitty_mqtt_connected", "1 while connected to the MQTT broker.", registry=registry
        )
        self.reconnects = Counter(
            "kitty_mqtt_reconnects",
            "Connections re-established after the broker connection was lost.",
            registry=registry,
        )
        self.dropped_events = Counter(
            "kitty_mqtt_dropped_events",
            "Events dropped because the queue for a broker outage was full.",
            registry=registry,
        )


class MqttLink:
    """One service's connection to the broker, kept alive until `stop`."""

    def __init__(
        self,
        service: ServiceName,
        broker: BrokerConfig | None,
        *,
        client_id: str,
        registry: CollectorRegistry,
        max_queued_events: int = DEFAULT_MAX_QUEUED_EVENTS,
        backoff: Backoff | None = None,
        presence: Presence | None = None,
    ) -> None:
        """Prepare the link; with `broker` None, MQTT is disabled and messages go nowhere.

        `presence` defaults to the service's availability topic.
        """
        self._service = service
        self._broker = broker
        self._client_id = client_id
        self._max_queued_events = max_queued_events
        self._backoff = backoff or Backoff()
        self._metrics = _LinkMetrics(registry)
        self._presence = presence or Presence.availability(service)
        self._subscriptions: list[_Subscription] = []
        # Not yet subscribed on this connection; every connect subscribes them all.
        self._unsent_subscriptions: list[_Subscription] = []
        self._retained: dict[str, _Message] = {}
        self._outbox: deque[_Message] = deque()
        self._outbox_changed = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._state = MqttState.DISABLED if broker is None else MqttState.DISCONNECTED
        self._task: asyncio.Task[None] | None = None
        self._ever_connected = False
        self._outage_started: float | None = None
        self._overflow_reported = False

    @property
    def state(self) -> MqttState:
        """Return whether the link is connected, disconnected or disabled."""
        return self._state

    def publish_event(self, topic: str, payload: MqttPayload, qos: int = 1) -> None:
        """Send a non-retained message.

        QoS 1 events survive a broker outage in a bounded queue (oldest dropped
        first) and go out in order after the reconnect; QoS 0 messages are
        dropped while disconnected.
        """
        if self._state is MqttState.DISABLED:
            return
        if qos == 0 and self._state is not MqttState.CONNECTED:
            _LOGGER.debug("Not connected, dropping QoS 0 message on %s", topic)
            return
        self._enqueue(_Message(topic, _encode(payload), qos, retain=False))

    def set_retained(self, topic: str, payload: MqttPayload, qos: int = RETAINED_QOS) -> None:
        """Store retained state and publish it now and after every (re)connect."""
        message = _Message(topic, _encode(payload), qos, retain=True)
        self._retained[topic] = message
        # While disconnected the store alone is enough: connecting publishes it.
        if self._state is MqttState.CONNECTED:
            self._enqueue(message)

    def subscribe(self, topic_filter: str, callback: MessageCallback, qos: int = 1) -> None:
        """Deliver every message matching `topic_filter` to `callback`, across reconnects.

        Retained messages arrive on every (re)connect, marked `retain`. With MQTT
        disabled nothing ever arrives.
        """
        subscription = _Subscription(topic_filter, callback, qos)
        self._subscriptions.append(subscription)
        if self._state is MqttState.CONNECTED:
            # The sender subscribes it, in order with what it publishes.
            self._unsent_subscriptions.append(subscription)
            self._outbox_changed.set()

    def start(self) -> None:
        """Start connecting in the background."""
        if self._broker is None or self._task is not None:
            return
        self._task = asyncio.create_task(
            self._run(self._broker), name=f"kitty-{self._service}-mqtt"
        )

    async def stop(self) -> None:
        """Flush queued messages, publish the presence's `offline` and disconnect."""
        if self._task is None:
            return
        self._stop_requested.set()
        self._outbox_changed.set()
        try:
            await asyncio.wait_for(self._task, STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            _LOGGER.warning("MQTT link did not stop within %s s", STOP_TIMEOUT_SECONDS)
        self._task = None
        self._set_state(MqttState.DISCONNECTED)

    async def _run(self, broker: BrokerConfig) -> None:
        # Loading the CA store blocks, so it happens once and off the event loop.
        tls_context = await asyncio.to_thread(ssl.create_default_context) if broker.tls else None
        while not self._stop_requested.is_set():
            try:
                async with self._new_client(broker, tls_context) as client:
                    await self._serve(broker, client)
            except aiomqtt.MqttError as err:
                self._on_connection_error(broker, str(err))
            except Exception:
                # A bug must not end MQTT for the life of the process: log and reconnect.
                _LOGGER.exception("Unexpected error in the MQTT link")
                self._on_connection_error(broker, "unexpected error")
            else:
                return
            await sleep_unless_set(self._stop_requested, self._backoff.next_delay())

    def _new_client(
        self, broker: BrokerConfig, tls_context: ssl.SSLContext | None
    ) -> aiomqtt.Client:
        return aiomqtt.Client(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password,
            identifier=self._client_id,
            protocol=broker.protocol,
            tls_context=tls_context,
            keepalive=KEEPALIVE_SECONDS,
            will=aiomqtt.Will(
                self._presence.topic,
                _encode(self._presence.offline()),
                qos=self._presence.qos,
                retain=True,
            ),
        )

    async def _serve(self, broker: BrokerConfig, client: aiomqtt.Client) -> None:
        """Run one connection until it drops (raises) or `stop` drained the outbox."""
        self._on_connected(broker)
        await self._announce(client)
        await client.subscribe(HA_STATUS_TOPIC, qos=1)
        self._unsent_subscriptions.clear()
        for subscription in list(self._subscriptions):
            await client.subscribe(subscription.topic_filter, qos=subscription.qos)
        receiver = asyncio.create_task(self._receive(client))
        sender = asyncio.create_task(self._send_outbox(client))
        try:
            done, _ = await asyncio.wait((receiver, sender), return_when=asyncio.FIRST_COMPLETED)
        finally:
            receiver.cancel()
            sender.cancel()
            await asyncio.gather(receiver, sender, return_exceptions=True)
        for task in done:
            task.result()
        await self._publish_presence(client, self._presence.offline())
        _LOGGER.info("Published offline; disconnecting from MQTT broker %s", broker)

    async def _announce(self, client: aiomqtt.Client) -> None:
        if self._presence.online is not None:
            await self._publish_presence(client, self._presence.online)
        # A copy: set_retained may add state while this awaits the broker.
        for message in list(self._retained.values()):
            await _publish(client, message)

    async def _publish_presence(self, client: aiomqtt.Client, payload: MqttPayload) -> None:
        await client.publish(
            self._presence.topic, _encode(payload), qos=self._presence.qos, retain=True
        )

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.matches(HA_STATUS_TOPIC) and message.payload == HA_ONLINE.encode():
                _LOGGER.info("Home Assistant is online; re-publishing retained state")
                await self._announce(client)
            self._deliver(message)

    def _deliver(self, message: aiomqtt.Message) -> None:
        if not isinstance(message.payload, bytes):
            return
        received = ReceivedMessage(message.topic.value, message.payload, bool(message.retain))
        for subscription in self._subscriptions:
            if not message.topic.matches(subscription.topic_filter):
                continue
            try:
                subscription.callback(received)
            except Exception:
                # One bad handler must not cut the connection for everything else.
                _LOGGER.exception("Handling an MQTT message on %s failed", received.topic)

    async def _send_outbox(self, client: aiomqtt.Client) -> None:
        """Send queued messages in order; return once stop is requested and all are sent."""
        while True:
            while self._unsent_subscriptions:
                subscription = self._unsent_subscriptions[0]
                await client.subscribe(subscription.topic_filter, qos=subscription.qos)
                self._unsent_subscriptions.pop(0)
            while self._outbox:
                message = self._outbox[0]
                await _publish(client, message)
                # Removed only once the broker has it, so a failure keeps it queued.
                # An overflow during the publish may already have dropped it.
                if self._outbox and self._outbox[0] is message:
                    self._outbox.popleft()
            if self._stop_requested.is_set():
                return
            self._outbox_changed.clear()
            await self._outbox_changed.wait()

    def _enqueue(self, message: _Message) -> None:
        if len(self._outbox) >= self._max_queued_events:
            self._outbox.popleft()
            self._metrics.dropped_events.inc()
            if not self._overflow_reported:
                self._overflow_reported = True
                _LOGGER.warning(
                    "More than %d MQTT messages waiting for the broker; dropping the oldest",
                    self._max_queued_events,
                )
        self._outbox.append(message)
        self._outbox_changed.set()

    def _on_connected(self, broker: BrokerConfig) -> None:
        self._set_state(MqttState.CONNECTED)
        self._backoff.reset()
        self._overflow_reported = False
        if self._outage_started is not None:
            _LOGGER.info(
                "Connected to MQTT broker %s after %.1f s",
                broker,
                time.monotonic() - self._outage_started,
            )
        else:
            _LOGGER.info("Connected to MQTT broker %s", broker)
        if self._ever_connected:
            self._metrics.reconnects.inc()
        self._ever_connected = True
        self._outage_started = None

    def _on_connection_error(self, broker: BrokerConfig, reason: str) -> None:
        self._set_state(MqttState.DISCONNECTED)
        # Retained state is re-sent from the store on connect, and QoS 0 is
        # best effort, so only QoS 1 events wait for the broker.
        self._outbox = deque(
            message for message in self._outbox if message.qos and not message.retain
        )
        if self._outage_started is not None:
            _LOGGER.debug("MQTT broker %s still unreachable: %s", broker, reason)
            return
        self._outage_started = time.monotonic()
        if self._ever_connected:
            _LOGGER.warning("Lost the MQTT broker %s (%s); reconnecting", broker, reason)
        else:
            _LOGGER.warning("Cannot reach the MQTT broker %s (%s); retrying", broker, reason)

    def _set_state(self, state: MqttState) -> None:
        self._state = state
        self._metrics.connected.set(state is MqttState.CONNECTED)


async def _publish(client: aiomqtt.Client, message: _Message) -> None:
    await client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)


def _encode(payload: MqttPayload) -> bytes:
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    if isinstance(payload, str):
        return payload.encode()
    return payload
