"""The worker routes over real HTTP: scopes, claims, stale leases and clear refusals."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kittyai.contract.orchestrator import NodeCapacity, StepInfo
from kittyai.orchestrator.database import Database
from tests.helpers.workers import ADMIN_TOKEN, READER_TOKEN, WORKER_TOKEN, WorkServer

RUN = "r-00000000000a"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[WorkServer]:
    database = await Database.open(None, tmp_path)
    server = WorkServer(database, lease_timeout_s=30)
    await server.start()
    yield server
    await server.close()
    await database.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def capacity(node: str = "bench") -> dict[str, Any]:
    return NodeCapacity(
        node_id=node, online=True, capabilities=["cad"], max_jobs=1, at=datetime.now(UTC)
    ).model_dump(mode="json")


async def post(
    http: aiohttp.ClientSession,
    server: WorkServer,
    path: str,
    body: Any,
    *,
    token: str = WORKER_TOKEN,
) -> tuple[int, Any]:
    async with http.post(
        server.url + path, json=body, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        payload = await response.json() if response.content_type == "application/json" else None
        return response.status, payload


@pytest.fixture
async def submitted(server: WorkServer) -> AsyncIterator[None]:
    """A step for a `cad` worker, started as the engine would, waiting for one."""

    async def log(_line: str) -> None:
        return None

    step = StepInfo(index=0, name="part", kind="cad.part", title="Part", capability="cad")
    waiting = asyncio.create_task(server.queue.execute(run_id=RUN, step=step, attempt=1, log=log))
    yield
    waiting.cancel()


async def test_claiming_needs_the_nodes_register_scope(
    server: WorkServer, http: aiohttp.ClientSession
) -> None:
    status, body = await post(
        http,
        server,
        "/api/nodes/bench/claim",
        {"capacity": capacity(), "wait_s": 0},
        token=READER_TOKEN,
    )
    assert (status, body["error"]["code"]) == (403, "missing_scope")
    # The service's own token has every scope.
    status, body = await post(
        http,
        server,
        "/api/nodes/bench/claim",
        {"capacity": capacity(), "wait_s": 0},
        token=ADMIN_TOKEN,
    )
    assert (status, body["items"]) == (200, [])


async def test_a_claim_for_another_node_is_refused(
    server: WorkServer, http: aiohttp.ClientSession
) -> None:
    status, body = await post(
        http, server, "/api/nodes/bench/claim", {"capacity": capacity("other"), "wait_s": 0}
    )

    assert status == 422
    assert body["error"]["code"] == "node_mismatch"
    assert "'other'" in body["error"]["message"]


@pytest.mark.usefixtures("submitted")
async def test_a_stale_lease_answers_409_and_an_unknown_item_404(
    server: WorkServer, http: aiohttp.ClientSession
) -> None:
    status, claimed = await post(
        http, server, "/api/nodes/bench/claim", {"capacity": capacity(), "wait_s": 10}
    )
    [item] = claimed["items"]
    work = f"/api/work/{item['id']}"

    status, _ = await post(http, server, f"{work}/release", {"lease_token": item["lease_token"]})
    assert status == 204
    status, body = await post(
        http, server, f"{work}/complete", {"lease_token": item["lease_token"], "result": {}}
    )
    assert status == 409
    assert body["error"]["code"] == "stale_lease"
    assert "stop working on it" in body["error"]["message"]

    status, body = await post(
        http, server, "/api/work/w-0000000000000000/heartbeat", {"lease_token": "t"}
    )
    assert (status, body["error"]["code"]) == (404, "unknown_work_item")


@pytest.mark.usefixtures("submitted")
async def test_the_claim_lists_the_node_with_what_it_holds(
    server: WorkServer, http: aiohttp.ClientSession
) -> None:
    status, claimed = await post(
        http, server, "/api/nodes/bench/claim", {"capacity": capacity(), "wait_s": 10}
    )

    assert status == 200
    assert claimed["lease_timeout_s"] == 30
    [node] = server.nodes.list().nodes
    assert (node.node_id, node.online, node.claimed) == ("bench", True, 1)


async def test_bad_bodies_are_refused_with_the_field_named(
    server: WorkServer, http: aiohttp.ClientSession
) -> None:
    status, body = await post(
        http, server, "/api/work/w-0000000000000000/fail", {"lease_token": "t", "message": ""}
    )

    assert status == 422
    assert body["error"]["code"] == "invalid_request"
    assert "message" in body["error"]["message"]
