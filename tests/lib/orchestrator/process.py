"""The orchestrator as a real process in tests: start it, call its API, read its event stream."""

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from kittyai.catalog import ServiceName
from kittyai.contract.orchestrator import RunEvent, RunEventType, RunInfo, RunState
from kittyai.orchestrator_client import OrchestratorClient
from tests.helpers.net import loopback_sockets
from tests.helpers.orchestrator import wait_for_run
from tests.helpers.services import Answer, ServiceApi, ServiceProcess

# DBOS launches and recovers its workflows before /health answers.
STARTUP_TIMEOUT_S = 60.0


def orchestrator_service(
    workdir: Path, *, mqtt_port: int | None = None, **options: Any
) -> ServiceProcess:
    """Return a `python -m kittyai.orchestrator` process (not started) with `options`."""
    return ServiceProcess(
        ServiceName.ORCHESTRATOR, workdir, mqtt_port=mqtt_port, extra_options=options
    )


def start_orchestrator(
    workdir: Path, *, mqtt_port: int | None = None, **options: Any
) -> ServiceProcess:
    """Start an orchestrator process; a module fixture may call this."""
    with loopback_sockets():
        process = orchestrator_service(workdir, mqtt_port=mqtt_port, **options)
        process.start(timeout=STARTUP_TIMEOUT_S)
    return process


def scoped_token(name: str, token: str, *scopes: str) -> dict[str, Any]:
    """Return one entry of the `scoped_tokens` option."""
    return {"name": name, "token": token, "scopes": list(scopes)}


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One thing an SSE stream sent: an event (`id`, `event`, `data`) or a comment."""

    id: int | None = None
    event: str | None = None
    data: str | None = None
    comment: str | None = None

    @property
    def run_event(self) -> RunEvent:
        """Return the RunEvent the item carries."""
        assert self.data is not None, self
        return RunEvent.model_validate_json(self.data)


@dataclass(slots=True)
class OrchestratorApi(ServiceApi):
    """Calls one orchestrator process: as it is, or through the integration's client."""

    @property
    def client(self) -> OrchestratorClient:
        """Return the client the integration calls the orchestrator with."""
        return OrchestratorClient(self.session, self.process.url, self.process.token)

    async def create(self, token: str | None = None, **body: Any) -> Answer:
        """POST a run; `body` is the CreateRunRequest as JSON."""
        return await self.call("POST", "/api/runs", json_body=body, token=token)

    async def create_noop(self, **params: Any) -> RunInfo:
        """Create a drill run that must be accepted; return it."""
        answer = await self.create(template="noop", params=params)
        assert answer.status == 201, answer.body
        return RunInfo.model_validate(answer.body)

    async def run(self, run_id: str) -> RunInfo:
        """Return a run as it is now."""
        return RunInfo.model_validate(await self.get(f"/api/runs/{run_id}"))

    async def wait_for(self, run_id: str, state: RunState) -> RunInfo:
        """Return the run once it is in `state`."""
        return await wait_for_run(self.client, run_id, state)

    async def decide(self, run_id: str, token: str | None = None, **body: Any) -> Answer:
        """POST a decision at the run's gate."""
        return await self.call("POST", f"/api/runs/{run_id}/approvals", json_body=body, token=token)

    async def approve(self, run_id: str, approver: str = "ada") -> RunInfo:
        """Approve the run's gate, which must be accepted."""
        answer = await self.decide(run_id, decision="approve", approver=approver)
        assert answer.status == 200, answer.body
        return RunInfo.model_validate(answer.body)

    async def stream(
        self, path: str, *, last_event_id: int | None = None, token: str | None = None
    ) -> AsyncGenerator[StreamItem]:
        """Yield what an SSE stream sends until the server ends it."""
        headers = {"Authorization": f"Bearer {token or self.process.token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        async with self.session.get(
            self.process.url + path,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=30),
        ) as response:
            assert response.status == 200, await response.text()
            assert response.content_type == "text/event-stream"
            fields: dict[str, str] = {}
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    yield StreamItem(comment=line[1:].strip())
                elif line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                elif fields:
                    yield StreamItem(
                        id=int(fields["id"]) if "id" in fields else None,
                        event=fields.get("event"),
                        data=fields.get("data"),
                    )
                    fields = {}

    async def events_until(
        self, path: str, last: Callable[[RunEvent], bool], *, last_event_id: int | None = None
    ) -> list[RunEvent]:
        """Return the events a stream sends up to the first for which `last` is true."""
        events = []
        async with aclosing(self.stream(path, last_event_id=last_event_id)) as items:
            async for item in items:
                if item.event is None:
                    continue
                assert item.event == "run_event", item
                event = item.run_event
                assert item.id == event.seq, item
                events.append(event)
                if last(event):
                    return events
        raise AssertionError(f"the stream ended after {events}")

    async def events_of(self, run_id: str) -> list[RunEvent]:
        """Return every event of a finished run, replayed from the store."""
        return await self.events_until(f"/api/runs/{run_id}/events", run_finished)


def run_finished(event: RunEvent) -> bool:
    """Return whether `event` says its run ended."""
    return event.type is RunEventType.RUN and event.state.finished


def step_logs(events: list[RunEvent], text: str) -> list[RunEvent]:
    """Return the log events whose message contains `text`."""
    return [e for e in events if e.type is RunEventType.LOG and text in (e.message or "")]
