"""A test-side MQTT client that records what the broker delivers."""

import asyncio
from collections.abc import Callable
import time
from types import TracebackType
from typing import Self
import uuid

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

type Match = Callable[[aiomqtt.Message], bool]


def on(topic: str, payload: str | None = None) -> Match:
    """Match messages on `topic`, and with `payload` when given."""

    def match(message: aiomqtt.Message) -> bool:
        return message.topic.value == topic and (payload is None or text(message) == payload)

    return match


def text(message: aiomqtt.Message) -> str:
    """Return the payload of `message` as text."""
    assert isinstance(message.payload, bytes)
    return message.payload.decode()


class MqttProbe:
    """Subscribes to `topic_filter` and keeps every message it receives.

    With `retain_as_published` (MQTT 5) live deliveries keep the publisher's retain
    flag; otherwise the broker clears it on everything but stored messages.
    """

    def __init__(
        self, port: int, topic_filter: str = "#", *, retain_as_published: bool = False
    ) -> None:
        self._client = aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=f"probe-{uuid.uuid4().hex}",
            protocol=aiomqtt.ProtocolVersion.V5 if retain_as_published else None,
        )
        self._filter = topic_filter
        self._options = (
            SubscribeOptions(qos=1, retainAsPublished=True) if retain_as_published else None
        )
        self.messages: list[aiomqtt.Message] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self._client.__aenter__()
        try:
            if self._options is None:
                await self._client.subscribe(self._filter, qos=1)
            else:
                await self._client.subscribe(self._filter, options=self._options)
        except BaseException as err:
            await self._client.__aexit__(type(err), err, err.__traceback__)
            raise
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._client.__aexit__(exc_type, exc, tb)

    async def publish(
        self, topic: str, payload: str, *, qos: int = 0, retain: bool = False
    ) -> None:
        """Publish as another client would, e.g. Home Assistant."""
        await self._client.publish(topic, payload, qos=qos, retain=retain)

    def clear(self) -> None:
        """Forget what arrived so far."""
        self.messages.clear()

    # A timeout parameter rather than the caller's asyncio.timeout: a failure then
    # lists what did arrive.
    async def expect(self, match: Match, timeout: float = 10.0) -> aiomqtt.Message:  # noqa: ASYNC109
        """Return the first received message that matches, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if match(message):
                    return message
            self._arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [(m.topic.value, m.payload) for m in self.messages]
                raise AssertionError(f"no matching message within {timeout} s; got {seen}")
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                continue

    async def _collect(self) -> None:
        async for message in self._client.messages:
            self.messages.append(message)
            self._arrived.set()
