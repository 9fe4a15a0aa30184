"""The orchestrator's HTTP API and its wiring: runs, approvals, artifacts, nodes, events.

Every route needs a token (the scaffold's middleware) and a scope (`runs:read`,
`runs:write`, `runs:approve`). Writes are rate-limited per token. The engine's
refusals answer with their own code and status (see `RunErrorCode`), in KITTY's
error body `{"error": {"code", "message"}, "correlation_id"}`; nothing changes
when a request is refused.

`POST /api/runs` answers 201 with the new run and its `Location`, or 200 with the
run an earlier request with the same idempotency key created.
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
import logging
import math
from pathlib import Path
from urllib.parse import quote

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from kittyai.cad_client import CadClient
from kittyai.contract.orchestrator import (
    ApprovalRequest,
    ArtifactList,
    CancelRequest,
    CreateRunRequest,
    NodeList,
    RetryRequest,
    RunErrorCode,
    RunEvent,
    RunInfo,
    RunList,
    RunState,
    RunStats,
    TemplateInfo,
    TemplateList,
)
from kittyai.http_server import TOKEN_NAME_KEY, ApiError, read_model, require_scope
from kittyai.logs import CORRELATION_ID
from kittyai.orchestrator.database import Database
from kittyai.orchestrator.dbos_engine import DbosEngine
from kittyai.orchestrator.engine import RunEngine, RunError
from kittyai.orchestrator.home_assistant import HomeAssistantClient
from kittyai.orchestrator.nodes import NodeRegistry
from kittyai.orchestrator.openapi import Operation, Reply, build_openapi
from kittyai.orchestrator.options import OrchestratorOptions, PeerOptions
from kittyai.orchestrator.publish import RunPublisher
from kittyai.orchestrator.ratelimit import WriteRateLimiter
from kittyai.orchestrator.sse import (
    EVENT_STREAM,
    LAST_EVENT_ID_HEADER,
    last_event_id,
    stream_events,
)
from kittyai.orchestrator.templates import shipped_templates
from kittyai.orchestrator.templates.base import Peers, Template
from kittyai.orchestrator.work_api import add_work_routes
from kittyai.orchestrator.workqueue import WorkQueue
from kittyai.rag_client import RagClient
from kittyai.service import HEALTH_PATH, ServiceRuntime
from kittyai.supervisor import SupervisorClient
from kittyai.validation import describe_errors

_LOGGER = logging.getLogger(__name__)

RUNS_READ = "runs:read"
RUNS_WRITE = "runs:write"
RUNS_APPROVE = "runs:approve"
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 200
API_TITLE = "KITTY Orchestrator"
RETENTION_INTERVAL_S = 24 * 3600.0
_ERROR_STATUS = {
    RunErrorCode.UNKNOWN_TEMPLATE: HTTPStatus.UNPROCESSABLE_CONTENT,
    RunErrorCode.INVALID_PARAMS: HTTPStatus.UNPROCESSABLE_CONTENT,
    RunErrorCode.PATH_NOT_ALLOWED: HTTPStatus.UNPROCESSABLE_CONTENT,
    RunErrorCode.PATCH_DOES_NOT_APPLY: HTTPStatus.UNPROCESSABLE_CONTENT,
    RunErrorCode.TEMPLATE_UNAVAILABLE: HTTPStatus.UNPROCESSABLE_CONTENT,
    RunErrorCode.INVALID_CHOICE: HTTPStatus.UNPROCESSABLE_CONTENT,
    RunErrorCode.RUN_NOT_FOUND: HTTPStatus.NOT_FOUND,
    RunErrorCode.ARTIFACT_NOT_FOUND: HTTPStatus.NOT_FOUND,
    RunErrorCode.NOT_AWAITING_APPROVAL: HTTPStatus.CONFLICT,
    RunErrorCode.CANNOT_RETRY: HTTPStatus.CONFLICT,
    RunErrorCode.ALREADY_FINISHED: HTTPStatus.CONFLICT,
}

type CollectStats = Callable[[], Awaitable[RunStats]]


async def serve(runtime: ServiceRuntime[OrchestratorOptions]) -> None:
    """Open the database, start the work queue and the engine, publish, and add the routes."""
    options = runtime.options
    url = None if options.database.url is None else options.database.url.get_secret_value()
    # The work queue's module is imported above: its tables are created with the rest.
    database = await Database.open(url, runtime.data_dir)
    runtime.on_stop(database.close)
    nodes = NodeRegistry(stale_after_s=options.lease_timeout_s)
    nodes.listen(runtime.mqtt)
    queue = WorkQueue(database, nodes, lease_timeout_s=options.lease_timeout_s)
    queue.start()
    runtime.on_stop(queue.close)
    templates = shipped_templates()
    engine = await DbosEngine.start(
        database,
        templates,
        _peers(runtime),
        runtime.data_dir,
        options.quotas,
        work_queue=queue,
    )
    # Stopped before the work queue and the database it uses (callbacks run newest first).
    runtime.on_stop(engine.stop)
    _LOGGER.info(
        "Runs kept in %s; templates: %s",
        "SQLite" if database.is_sqlite else "PostgreSQL",
        ", ".join(templates),
    )
    publisher = RunPublisher(engine, engine.stats, runtime.mqtt, runtime.data_dir)
    runtime.create_background_task(publisher.run_forever(), "publish")
    runtime.create_background_task(_prune_forever(engine, options.retention_days), "retention")
    api = OrchestratorApi(
        engine=engine,
        templates=templates,
        collect_stats=engine.stats,
        limiter=WriteRateLimiter(per_minute=options.writes_per_minute, burst=options.write_burst),
        heartbeat_s=options.sse_heartbeat_s,
        nodes=nodes,
        public_paths=frozenset({HEALTH_PATH}),
    )
    api.add_routes(runtime.app)
    add_work_routes(runtime.app, queue, nodes)


def _peers(runtime: ServiceRuntime[OrchestratorOptions]) -> Peers:
    options = runtime.options
    return Peers(
        session=runtime.session,
        supervisor=SupervisorClient.from_env(runtime.session),
        home_assistant=HomeAssistantClient.from_options(runtime.session, options.home_assistant),
        config_dir=Path(options.home_assistant.config_dir),
        cad=_peer(CadClient, runtime, options.cad),
        knowledge=_peer(RagClient, runtime, options.knowledge),
        policies=options.policies,
    )


def _peer[ClientT: (CadClient, RagClient)](
    client: type[ClientT], runtime: ServiceRuntime[OrchestratorOptions], peer: PeerOptions
) -> ClientT | None:
    if peer.url is None:
        return None
    token = "" if peer.token is None else peer.token.get_secret_value()
    return client(runtime.session, peer.url, token)


async def _prune_forever(engine: DbosEngine, retention_days: float) -> None:
    """Apply the retention policy at start and once a day."""
    while True:
        try:
            await engine.prune_artifacts(retention_days)
        except (OSError, SQLAlchemyError) as err:
            # Tomorrow's pass tries again; the runs are not affected.
            _LOGGER.warning("Retention pass failed: %s", err)
        await asyncio.sleep(RETENTION_INTERVAL_S)


class RunQuery(BaseModel):
    """The query of `GET /api/runs`."""

    model_config = ConfigDict(extra="forbid")

    state: str | None = Field(
        default=None, description="Run states, comma-separated, e.g. `queued,running`."
    )
    template: str | None = Field(default=None, min_length=1, max_length=64)
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT)

    def states(self) -> frozenset[RunState]:
        """Return the states asked for; empty means every state."""
        if not self.state:
            return frozenset()
        states = set()
        for name in filter(None, (name.strip() for name in self.state.split(","))):
            try:
                states.add(RunState(name))
            except ValueError:
                raise ApiError(
                    HTTPStatus.UNPROCESSABLE_CONTENT,
                    "invalid_request",
                    f"state: {name!r} is no run state; use {', '.join(RunState)}",
                ) from None
        return frozenset(states)


class EventQuery(BaseModel):
    """The query of the event streams."""

    model_config = ConfigDict(extra="forbid")

    after: int = Field(
        default=0, ge=0, description=f"Resume after this event id; {LAST_EVENT_ID_HEADER} wins."
    )

    def resume_after(self, request: web.Request) -> int:
        """Return the event id to resume after: the header's, else the query's."""
        header = last_event_id(request)
        return self.after if header is None else header


@contextmanager
def _run_errors() -> Iterator[None]:
    """Answer the engine's refusals with their status and code."""
    try:
        yield
    except RunError as err:
        raise ApiError(_ERROR_STATUS[err.code], err.code, err.message) from None


def _query[ModelT: BaseModel](request: web.Request, model: type[ModelT]) -> ModelT:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as err:
        raise ApiError(
            HTTPStatus.UNPROCESSABLE_CONTENT, "invalid_request", describe_errors(err)
        ) from None


async def _read_optional[ModelT: BaseModel](request: web.Request, model: type[ModelT]) -> ModelT:
    """Parse the body as `model`; an empty body is the model's defaults."""
    if not await request.read():
        return model()
    return await read_model(request, model)


def _json(model: BaseModel, status: HTTPStatus = HTTPStatus.OK, **headers: str) -> web.Response:
    return web.json_response(text=model.model_dump_json(), status=status, headers=headers)


def _run_path(run_id: str) -> str:
    return f"/api/runs/{run_id}"


def _content_disposition(name: str) -> str:
    # RFC 6266: an ASCII fallback for old clients, the exact name in `filename*`.
    fallback = name.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"


@dataclass(slots=True, kw_only=True)
class OrchestratorApi:
    """The handlers, bound to one running orchestrator."""

    engine: RunEngine
    templates: Mapping[str, Template]
    collect_stats: CollectStats
    limiter: WriteRateLimiter
    heartbeat_s: float
    nodes: NodeRegistry
    public_paths: frozenset[str] = frozenset()
    # Set when the service stops: event streams end cleanly instead of being cut.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _operations: list[Operation] = field(default_factory=list, init=False)

    def add_routes(self, app: web.Application) -> None:
        """Add the orchestrator's routes (and `/openapi.json`) to `app`."""
        self._operations = self._route_table()
        for operation in self._operations:
            app.router.add_route(operation.method, operation.path, self._guarded(operation))
        app.on_shutdown.append(self._on_shutdown)

    def _guarded(self, operation: Operation) -> Handler:
        """Check the operation's scope, and its token's writes if limited, before its handler."""

        async def handler(request: web.Request) -> web.StreamResponse:
            if operation.scope is not None:
                require_scope(request, operation.scope)
            if operation.rate_limited:
                self._limit_writes(request)
            return await operation.handler(request)

        return handler

    async def _on_shutdown(self, _app: web.Application) -> None:
        self.stopping.set()

    def _route_table(self) -> list[Operation]:
        run_errors = (HTTPStatus.NOT_FOUND,)
        run_changes = (HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT, HTTPStatus.UNPROCESSABLE_CONTENT)
        location = {"Location": "Where the run is."}
        resume = {LAST_EVENT_ID_HEADER: "Resume after this event id (sent by SSE clients)."}
        events = Reply(
            HTTPStatus.OK,
            "Server-sent `run_event`s, their id the event's `seq`, and `: heartbeat` comments.",
            RunEvent,
            media_type=EVENT_STREAM,
        )
        get, post = hdrs.METH_GET, hdrs.METH_POST
        return [
            Operation(
                method=post,
                path="/api/runs",
                handler=self.create_run,
                scope=RUNS_WRITE,
                body=CreateRunRequest,
                rate_limited=True,
                replies=(
                    Reply(HTTPStatus.CREATED, "The new run.", RunInfo, headers=location),
                    Reply(HTTPStatus.OK, "The run the same idempotency key created.", RunInfo),
                ),
            ),
            Operation(
                method=get,
                path="/api/runs",
                handler=self.list_runs,
                scope=RUNS_READ,
                query=RunQuery,
                replies=(Reply(HTTPStatus.OK, "A page of runs.", RunList),),
            ),
            Operation(
                method=get,
                path="/api/runs/{run_id}",
                handler=self.get_run,
                scope=RUNS_READ,
                errors=run_errors,
                replies=(Reply(HTTPStatus.OK, "The run.", RunInfo),),
            ),
            Operation(
                method=get,
                path="/api/runs/{run_id}/artifacts",
                handler=self.list_artifacts,
                scope=RUNS_READ,
                errors=run_errors,
                replies=(Reply(HTTPStatus.OK, "The run's artifacts.", ArtifactList),),
            ),
            Operation(
                method=get,
                path="/api/runs/{run_id}/artifacts/{artifact_id}",
                handler=self.get_artifact,
                scope=RUNS_READ,
                errors=(HTTPStatus.NOT_FOUND, HTTPStatus.GONE),
                replies=(Reply(HTTPStatus.OK, "The file.", media_type="*/*"),),
            ),
            Operation(
                method=post,
                path="/api/runs/{run_id}/approvals",
                handler=self.decide,
                scope=RUNS_APPROVE,
                body=ApprovalRequest,
                rate_limited=True,
                errors=run_changes,
                replies=(Reply(HTTPStatus.OK, "The run after the decision.", RunInfo),),
            ),
            Operation(
                method=post,
                path="/api/runs/{run_id}/retry",
                handler=self.retry,
                scope=RUNS_WRITE,
                body=RetryRequest,
                body_optional=True,
                rate_limited=True,
                errors=run_changes,
                replies=(Reply(HTTPStatus.OK, "The run, queued again.", RunInfo),),
            ),
            Operation(
                method=post,
                path="/api/runs/{run_id}/cancel",
                handler=self.cancel,
                scope=RUNS_WRITE,
                body=CancelRequest,
                body_optional=True,
                rate_limited=True,
                errors=run_changes,
                replies=(Reply(HTTPStatus.OK, "The run, cancelled or stopping.", RunInfo),),
            ),
            Operation(
                method=get,
                path="/api/runs/{run_id}/events",
                handler=self.run_events,
                scope=RUNS_READ,
                query=EventQuery,
                request_headers=resume,
                errors=run_errors,
                replies=(events,),
            ),
            Operation(
                method=get,
                path="/api/events",
                handler=self.all_events,
                scope=RUNS_READ,
                query=EventQuery,
                request_headers=resume,
                replies=(events,),
            ),
            Operation(
                method=get,
                path="/api/nodes",
                handler=self.list_nodes,
                scope=RUNS_READ,
                replies=(Reply(HTTPStatus.OK, "The workers.", NodeList),),
            ),
            Operation(
                method=get,
                path="/api/templates",
                handler=self.list_templates,
                scope=RUNS_READ,
                replies=(Reply(HTTPStatus.OK, "The templates.", TemplateList),),
            ),
            Operation(
                method=get,
                path="/api/stats",
                handler=self.stats,
                scope=RUNS_READ,
                replies=(Reply(HTTPStatus.OK, "The statistics.", RunStats),),
            ),
            Operation(
                method=get,
                path="/openapi.json",
                handler=self.openapi,
                scope=None,
                replies=(Reply(HTTPStatus.OK, "OpenAPI 3.1."),),
            ),
        ]

    def _limit_writes(self, request: web.Request) -> None:
        """Answer 429 when the request's token wrote too much lately."""
        if (wait_s := self.limiter.acquire(request[TOKEN_NAME_KEY])) is not None:
            raise ApiError(
                HTTPStatus.TOO_MANY_REQUESTS,
                "rate_limited",
                f"Too many writes with this token; try again in {math.ceil(wait_s)} s",
                headers={hdrs.RETRY_AFTER: str(math.ceil(wait_s))},
            )

    async def create_run(self, request: web.Request) -> web.Response:
        """Create a run from a template and its parameters.

        Without `requested_by`, the run is recorded as requested by the token's name.
        """
        body = await read_model(request, CreateRunRequest)
        if body.requested_by is None:
            body = body.model_copy(update={"requested_by": request[TOKEN_NAME_KEY]})
        with _run_errors():
            run, created = await self.engine.create(body, correlation_id=CORRELATION_ID.get())
        if not created:
            return _json(run)
        return _json(run, HTTPStatus.CREATED, **{hdrs.LOCATION: _run_path(run.id)})

    async def list_runs(self, request: web.Request) -> web.Response:
        """List runs, newest first, filtered by state and template."""
        query = _query(request, RunQuery)
        runs = await self.engine.list(
            states=query.states(), template=query.template, offset=query.offset, limit=query.limit
        )
        return _json(runs)

    async def get_run(self, request: web.Request) -> web.Response:
        """Return one run with its steps and approvals."""
        with _run_errors():
            return _json(await self.engine.get(request.match_info["run_id"]))

    async def list_artifacts(self, request: web.Request) -> web.Response:
        """List a run's artifacts, oldest first."""
        with _run_errors():
            artifacts = await self.engine.artifacts(request.match_info["run_id"])
        return _json(ArtifactList(artifacts=artifacts))

    async def get_artifact(self, request: web.Request) -> web.StreamResponse:
        """Download one artifact; 410 once the retention policy removed its file."""
        with _run_errors():
            info, path = await self.engine.artifact_file(
                request.match_info["run_id"], request.match_info["artifact_id"]
            )
        if not info.available or not await asyncio.to_thread(path.is_file):
            raise ApiError(
                HTTPStatus.GONE,
                "artifact_removed",
                f"The file of artifact {info.id} was removed by the retention policy",
            )
        return web.FileResponse(
            path,
            headers={
                hdrs.CONTENT_TYPE: info.media_type,
                hdrs.CONTENT_DISPOSITION: _content_disposition(info.name),
            },
        )

    async def decide(self, request: web.Request) -> web.Response:
        """Approve or reject the step a run waits at."""
        body = await read_model(request, ApprovalRequest)
        with _run_errors():
            return _json(await self.engine.decide(request.match_info["run_id"], body))

    async def retry(self, request: web.Request) -> web.Response:
        """Run a failed, rolled back or cancelled run again, from a step."""
        body = await _read_optional(request, RetryRequest)
        with _run_errors():
            return _json(await self.engine.retry(request.match_info["run_id"], body.from_step))

    async def cancel(self, request: web.Request) -> web.Response:
        """Cancel a run; what it did is undone."""
        body = await _read_optional(request, CancelRequest)
        with _run_errors():
            return _json(await self.engine.cancel(request.match_info["run_id"], body.reason))

    async def run_events(self, request: web.Request) -> web.StreamResponse:
        """Stream one run's events (SSE), from the first or after `Last-Event-ID`."""
        run_id = request.match_info["run_id"]
        with _run_errors():
            await self.engine.get(run_id)
        return await self._stream_events(request, run_id)

    async def all_events(self, request: web.Request) -> web.StreamResponse:
        """Stream every run's events (SSE), from the first or after `Last-Event-ID`."""
        return await self._stream_events(request, None)

    async def _stream_events(self, request: web.Request, run_id: str | None) -> web.StreamResponse:
        after = _query(request, EventQuery).resume_after(request)
        return await stream_events(
            request,
            self.engine.events(after=after, run_id=run_id),
            heartbeat_s=self.heartbeat_s,
            stopping=self.stopping,
        )

    async def list_nodes(self, request: web.Request) -> web.Response:
        """List the workers, with their capabilities and headroom."""
        return _json(self.nodes.list())

    async def list_templates(self, request: web.Request) -> web.Response:
        """List the templates, each with the JSON Schema of its parameters."""
        return _json(
            TemplateList(
                templates=[
                    TemplateInfo(
                        name=template.name,
                        title=template.title,
                        params_schema=template.params_model.model_json_schema(),
                    )
                    for template in self.templates.values()
                ]
            )
        )

    async def stats(self, request: web.Request) -> web.Response:
        """Return the statistics `kitty/orchestrator/runs` carries."""
        return _json(await self.collect_stats())

    async def openapi(self, request: web.Request) -> web.Response:
        """Return this API's OpenAPI 3.1 document."""
        return web.json_response(
            build_openapi(
                request.app, self._operations, title=API_TITLE, public_paths=self.public_paths
            )
        )
