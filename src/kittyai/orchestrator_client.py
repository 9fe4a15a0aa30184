"""Async client for the orchestrator's HTTP API: create runs, decide at their gates, follow them.

Home Assistant uses it with its shared aiohttp session. It needs no workflow engine:
it speaks the API's bodies (`kittyai.contract.orchestrator`) and nothing else. No
message of its errors contains the token.
"""

from collections.abc import Collection
from http import HTTPStatus

from yarl import URL

from kittyai.client import KittyClient, KittyRequestError, path_segment
from kittyai.contract.orchestrator import (
    ApprovalRequest,
    ArtifactInfo,
    ArtifactList,
    CancelRequest,
    CreateRunRequest,
    NodeInfo,
    NodeList,
    RetryRequest,
    RunInfo,
    RunList,
    RunState,
    RunStats,
)


class OrchestratorRequestError(KittyRequestError):
    """The orchestrator refused a request (HTTP 4xx), saying why."""


class OrchestratorClient(KittyClient):
    """Talks to one orchestrator over HTTP with a bearer token.

    It is a KittyClient, so `get_info` tells who the service is; what it adds are
    the run routes, and an `OrchestratorRequestError` for every request the
    orchestrator refuses.
    """

    refusal_error = OrchestratorRequestError
    # 201 for a new run, 200 for the one an idempotency key found. A 403 says the
    # token lacks a scope (`missing_scope`).
    also_success = frozenset({HTTPStatus.OK, HTTPStatus.CREATED})
    forbidden_is_refusal = True

    async def create_run(self, request: CreateRunRequest) -> RunInfo:
        """Plan and start a run; the same idempotency key returns the run made first."""
        body = await self._request_json(
            "POST", "/api/runs", json_body=request.model_dump(mode="json", exclude_none=True)
        )
        return self._parse(RunInfo, body, "a run")

    async def runs(
        self,
        *,
        states: Collection[RunState] = (),
        template: str | None = None,
        offset: int | None = None,
        limit: int | None = None,
    ) -> RunList:
        """Return a page of runs, newest first, in one of `states` and of `template` if given."""
        query: dict[str, str | int] = {}
        if states:
            query["state"] = ",".join(state.value for state in states)
        if template is not None:
            query["template"] = template
        if offset is not None:
            query["offset"] = offset
        if limit is not None:
            query["limit"] = limit
        path = str(URL("/api/runs").with_query(query))
        return self._parse(RunList, await self._request_json("GET", path), "a run list")

    async def run(self, run_id: str) -> RunInfo:
        """Return one run as it is now."""
        body = await self._request_json("GET", f"/api/runs/{path_segment(run_id)}")
        return self._parse(RunInfo, body, "a run")

    async def artifacts(self, run_id: str) -> list[ArtifactInfo]:
        """Return what a run produced (diffs, logs, backups), oldest first."""
        path = f"/api/runs/{path_segment(run_id)}/artifacts"
        body = await self._request_json("GET", path)
        return self._parse(ArtifactList, body, "an artifact list").artifacts

    async def decide(self, run_id: str, request: ApprovalRequest) -> RunInfo:
        """Approve or reject the step a run waits at; return the run after the decision."""
        return await self._run_command(run_id, "approvals", request.model_dump(mode="json"))

    async def retry(self, run_id: str, request: RetryRequest) -> RunInfo:
        """Run an unsuccessful run again from a step; return it queued."""
        return await self._run_command(run_id, "retry", request.model_dump(mode="json"))

    async def cancel(self, run_id: str, request: CancelRequest) -> RunInfo:
        """Stop a run that has not finished; what it did is undone."""
        return await self._run_command(run_id, "cancel", request.model_dump(mode="json"))

    async def stats(self) -> RunStats:
        """Return the active runs, those awaiting approval and the last result."""
        body = await self._request_json("GET", "/api/stats")
        return self._parse(RunStats, body, "run statistics")

    async def nodes(self) -> list[NodeInfo]:
        """Return the workers the orchestrator knows, with their capabilities and headroom."""
        body = await self._request_json("GET", "/api/nodes")
        return self._parse(NodeList, body, "a node list").nodes

    async def _run_command(self, run_id: str, command: str, body: object) -> RunInfo:
        """Send one command to a run; return the run the orchestrator answers with."""
        path = f"/api/runs/{path_segment(run_id)}/{command}"
        return self._parse(RunInfo, await self._request_json("POST", path, json_body=body), "a run")
