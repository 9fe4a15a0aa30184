"""The routes workers call: claim work, heartbeat leases, send log lines, report outcomes.

The models and paths are in `kittyai.worker.protocol`, which workers import
without the orchestrator. Every route needs a token with the scope
`nodes:register`. An unknown item answers 404 `unknown_work_item`; a lease that
has ended answers 409 `stale_lease`, and the worker must stop working on it.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
import re

from aiohttp import web
from pydantic import BaseModel

from kittyai.contract.orchestrator import ID_PATTERN
from kittyai.http_server import ApiError, read_model, require_scope
from kittyai.orchestrator.nodes import NodeRegistry
from kittyai.orchestrator.workqueue import StaleLeaseError, UnknownWorkItemError, WorkQueue
from kittyai.worker.protocol import (
    CLAIM_PATH,
    COMPLETE_PATH,
    FAIL_PATH,
    HEARTBEAT_PATH,
    LOG_PATH,
    NODES_REGISTER_SCOPE,
    RELEASE_PATH,
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    FailRequest,
    LeaseRenewal,
    LeaseRequest,
    LogRequest,
)

_ID = re.compile(ID_PATTERN)


def add_work_routes(app: web.Application, queue: WorkQueue, nodes: NodeRegistry) -> None:
    """Serve the worker routes of `queue` on `app`; claims also update `nodes`."""
    routes = _WorkRoutes(queue, nodes)
    app.router.add_post(CLAIM_PATH, routes.claim)
    app.router.add_post(HEARTBEAT_PATH, routes.heartbeat)
    app.router.add_post(LOG_PATH, routes.log)
    app.router.add_post(COMPLETE_PATH, routes.complete)
    app.router.add_post(FAIL_PATH, routes.fail)
    app.router.add_post(RELEASE_PATH, routes.release)


class _WorkRoutes:
    def __init__(self, queue: WorkQueue, nodes: NodeRegistry) -> None:
        self._queue = queue
        self._nodes = nodes

    async def claim(self, request: web.Request) -> web.Response:
        """Hand the node the items it is placed, waiting up to `wait_s` for some."""
        require_scope(request, NODES_REGISTER_SCOPE)
        node_id = request.match_info["node_id"]
        body = await read_model(request, ClaimRequest)
        if body.capacity.node_id != node_id:
            raise ApiError(
                HTTPStatus.UNPROCESSABLE_CONTENT,
                "node_mismatch",
                f"The capacity is of node {body.capacity.node_id!r}, the path names {node_id!r}",
            )
        self._nodes.record(body.capacity)
        items = await self._queue.claim(body.capacity, wait_s=body.wait_s)
        return _json(ClaimResponse(items=items, lease_timeout_s=self._queue.lease_timeout_s))

    async def heartbeat(self, request: web.Request) -> web.Response:
        """Renew the lease on an item."""
        item_id, body = await _work_request(request, LeaseRequest)
        with _work_errors():
            expires_at = await self._queue.heartbeat(item_id, body.lease_token)
        return _json(LeaseRenewal(lease_expires_at=expires_at))

    async def log(self, request: web.Request) -> web.Response:
        """Append lines to the run's log; renews the lease."""
        item_id, body = await _work_request(request, LogRequest)
        with _work_errors():
            await self._queue.append_log(item_id, body.lease_token, body.lines)
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def complete(self, request: web.Request) -> web.Response:
        """Finish an item with its step's result."""
        item_id, body = await _work_request(request, CompleteRequest)
        with _work_errors():
            await self._queue.complete(item_id, body.lease_token, body.result)
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def fail(self, request: web.Request) -> web.Response:
        """Finish an item as failed."""
        item_id, body = await _work_request(request, FailRequest)
        with _work_errors():
            await self._queue.fail(
                item_id, body.lease_token, body.message, retryable=body.retryable
            )
        return web.Response(status=HTTPStatus.NO_CONTENT)

    async def release(self, request: web.Request) -> web.Response:
        """Give an item back to the queue."""
        item_id, body = await _work_request(request, LeaseRequest)
        with _work_errors():
            await self._queue.release(item_id, body.lease_token)
        return web.Response(status=HTTPStatus.NO_CONTENT)


async def _work_request[ModelT: BaseModel](
    request: web.Request, model: type[ModelT]
) -> tuple[str, ModelT]:
    require_scope(request, NODES_REGISTER_SCOPE)
    item_id = request.match_info["item_id"]
    if not _ID.match(item_id):
        raise ApiError(
            HTTPStatus.NOT_FOUND, "unknown_work_item", f"There is no work item {item_id!r}"
        )
    return item_id, await read_model(request, model)


@contextmanager
def _work_errors() -> Iterator[None]:
    try:
        yield
    except UnknownWorkItemError as err:
        raise ApiError(HTTPStatus.NOT_FOUND, "unknown_work_item", str(err)) from None
    except StaleLeaseError as err:
        raise ApiError(
            HTTPStatus.CONFLICT,
            "stale_lease",
            f"{err}; stop working on it: another node may hold it now",
        ) from None


def _json(model: BaseModel) -> web.Response:
    return web.json_response(text=model.model_dump_json())
