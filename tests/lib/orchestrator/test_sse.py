"""The live event stream (SSE) of a real orchestrator process: resumable, with heartbeats.

A client that disconnects and reconnects with `Last-Event-ID` gets exactly the
events it missed, in order, none twice: the stream replays them from the store
before it goes live.
"""

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
import functools
from http import HTTPStatus
from pathlib import Path

import aiohttp
import pytest

from kittyai.contract.orchestrator import RunEvent, RunEventType, RunState, StepState
from tests.helpers.services import ServiceProcess
from tests.lib.orchestrator.process import (
    OrchestratorApi,
    StreamItem,
    run_finished,
    scoped_token,
    start_orchestrator,
    step_logs,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

WRITER_TOKEN = "writer-token-0123456789"


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = start_orchestrator(
        tmp_path_factory.mktemp("orchestrator"),
        sse_heartbeat_s=0.2,
        scoped_tokens=[scoped_token("writer", WRITER_TOKEN, "runs:write")],
    )
    yield process
    process.stop()


def waits_for_approval(event: RunEvent) -> bool:
    return event.type is RunEventType.RUN and event.state is RunState.AWAITING_APPROVAL


def assert_in_order_once(events: list[RunEvent]) -> None:
    seqs = [event.seq for event in events]
    assert seqs == sorted(set(seqs)), seqs


async def test_a_client_that_reconnects_misses_no_event(api: OrchestratorApi) -> None:
    run = await api.create_noop(steps=3, seconds=0.3, approval=True)
    path = f"/api/runs/{run.id}/events"

    before = await api.events_until(path, waits_for_approval)
    # Disconnected, while the run goes on without the client.
    await api.approve(run.id)
    after = await api.events_until(path, run_finished, last_event_id=before[-1].seq)

    everything = await api.events_of(run.id)
    assert before + after == everything
    assert_in_order_once(everything)
    assert after[0].seq > before[-1].seq
    assert after[-1].state is RunState.SUCCEEDED
    # What happened while disconnected: every step, and their log lines.
    assert [e.step for e in after if e.step_state is StepState.SUCCEEDED] == [0, 1, 2]
    for number in (1, 2, 3):
        assert len(step_logs(after, f"drill step {number} ran")) == 1


async def test_the_stream_of_every_run_resumes_after_a_given_event(
    api: OrchestratorApi,
) -> None:
    run = await api.create_noop(steps=2, approval=True)
    first = await api.events_until(f"/api/runs/{run.id}/events", waits_for_approval)
    await api.approve(run.id)
    await api.wait_for(run.id, RunState.SUCCEEDED)

    seen = await api.events_until(
        f"/api/events?after={first[-1].seq}",
        lambda event: event.run_id == run.id and run_finished(event),
    )

    ours = [event for event in seen if event.run_id == run.id]
    assert first + ours == await api.events_of(run.id)
    assert_in_order_once(seen)
    assert all(event.seq > first[-1].seq for event in seen)


async def test_a_quiet_stream_sends_heartbeats(api: OrchestratorApi) -> None:
    run = await api.create_noop(steps=1)
    events = await api.events_of(run.id)

    items: list[StreamItem] = []
    async with aclosing(
        api.stream(f"/api/runs/{run.id}/events", last_event_id=events[-1].seq)
    ) as stream:
        async for item in stream:
            items.append(item)
            if len(items) == 3:
                break

    # Nothing happened after the last event: only heartbeats, no event again.
    assert [item.comment for item in items] == ["heartbeat"] * 3


async def test_a_stream_must_be_asked_for_properly(api: OrchestratorApi) -> None:
    unknown = await api.call("GET", "/api/runs/r-000000000000/events")
    bad_id = await api.call("GET", "/api/events", params={"after": "yesterday"})
    async with api.session.get(
        f"{api.process.url}/api/events",
        headers={"Authorization": f"Bearer {api.process.token}", "Last-Event-ID": "-3"},
    ) as response:
        bad_header = response.status, await response.json()
    no_scope = await api.call("GET", "/api/events", token=WRITER_TOKEN)
    no_token = await api.call("GET", "/api/events", token="")

    assert (unknown.status, unknown.code) == (HTTPStatus.NOT_FOUND, "run_not_found")
    assert (bad_id.status, bad_id.code) == (HTTPStatus.UNPROCESSABLE_CONTENT, "invalid_request")
    assert bad_header[0] == HTTPStatus.UNPROCESSABLE_CONTENT
    assert bad_header[1]["error"]["code"] == "invalid_request"
    assert (no_scope.status, no_scope.code) == (HTTPStatus.FORBIDDEN, "missing_scope")
    assert (no_token.status, no_token.code) == (HTTPStatus.UNAUTHORIZED, "unauthorized")


async def test_streams_end_cleanly_when_the_service_stops(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    # Its own thread, joined before the test ends: the process stops while we read.
    with ThreadPoolExecutor(1) as thread:
        process = await loop.run_in_executor(
            thread, functools.partial(start_orchestrator, tmp_path, sse_heartbeat_s=0.2)
        )
        try:
            async with aiohttp.ClientSession() as session:
                api = OrchestratorApi(process, session)
                items: list[StreamItem] = []
                stopped: asyncio.Future[int] | None = None
                async with aclosing(api.stream("/api/events")) as stream:
                    async for item in stream:
                        items.append(item)
                        if stopped is None:
                            stopped = loop.run_in_executor(thread, process.stop)
                assert stopped is not None
                # The stream ended (no error reading it) and the service stopped cleanly.
                assert await stopped == 0
                assert items[0].comment == "heartbeat"
        finally:
            process.kill()
