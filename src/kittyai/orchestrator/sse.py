"""Server-sent events: the live stream of run events, resumable with `Last-Event-ID`.

Every event goes out as::

    id: <seq>
    event: run_event
    data: <RunEvent JSON>

and a `: heartbeat` comment keeps proxies from closing a quiet stream. The id is
the event's `seq`, which the engine stores, so a client that reconnects with
`Last-Event-ID` (browsers do it on their own) gets exactly the events it missed.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from http import HTTPStatus

from aiohttp import hdrs, web

from kittyai.contract.orchestrator import RunEvent
from kittyai.http_server import ApiError

EVENT_STREAM = "text/event-stream"
EVENT_NAME = "run_event"
LAST_EVENT_ID_HEADER = "Last-Event-ID"
HEARTBEAT = b": heartbeat\n\n"


def last_event_id(request: web.Request) -> int | None:
    """Return the `Last-Event-ID` a reconnecting client sent, if any."""
    if (given := request.headers.get(LAST_EVENT_ID_HEADER)) is None:
        return None
    try:
        seq = int(given)
    except ValueError:
        seq = -1
    if seq < 0:
        raise ApiError(
            HTTPStatus.UNPROCESSABLE_CONTENT,
            "invalid_request",
            f"{LAST_EVENT_ID_HEADER} must be an event id: a number, 0 or more",
        )
    return seq


def encode_event(event: RunEvent) -> bytes:
    """Return one event in the SSE wire format."""
    # Pydantic's JSON has no raw newlines, so one `data:` line carries it.
    return f"id: {event.seq}\nevent: {EVENT_NAME}\ndata: {event.model_dump_json()}\n\n".encode()


async def stream_events(
    request: web.Request,
    events: AsyncIterator[RunEvent],
    *,
    heartbeat_s: float,
    stopping: asyncio.Event,
) -> web.StreamResponse:
    """Send `events` to the client until it goes away or `stopping` is set."""
    response = web.StreamResponse(
        headers={
            hdrs.CONTENT_TYPE: EVENT_STREAM,
            hdrs.CACHE_CONTROL: "no-cache",
            # Reverse proxies (nginx, the Supervisor's ingress) must not buffer the stream.
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    # The next event is awaited across heartbeats: cancelling an async generator's
    # `__anext__` would close the generator.
    next_event = asyncio.create_task(_next(events))
    stopped = asyncio.create_task(stopping.wait())
    try:
        while True:
            done, _ = await asyncio.wait(
                {next_event, stopped}, timeout=heartbeat_s, return_when=asyncio.FIRST_COMPLETED
            )
            if stopped in done:
                break
            if next_event in done:
                if (event := next_event.result()) is None:
                    break
                await response.write(encode_event(event))
                next_event = asyncio.create_task(_next(events))
            else:
                await response.write(HEARTBEAT)
    except ConnectionResetError:
        # The client went away; there is nobody left to answer.
        return response
    finally:
        for future in (next_event, stopped):
            future.cancel()
        with suppress(asyncio.CancelledError):
            await next_event
        await _close(events)
    with suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def _next(events: AsyncIterator[RunEvent]) -> RunEvent | None:
    # None at the end: a task must not raise StopAsyncIteration into its awaiter.
    return await anext(events, None)


async def _close(events: AsyncIterator[RunEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
