"""The worker's client of the orchestrator's work routes (`kittyai.worker.protocol`).

No message of its errors contains the token.
"""

from http import HTTPStatus
from typing import Any

import aiohttp
from pydantic import BaseModel, ValidationError
from yarl import URL

from kittyai.contract.orchestrator import NodeCapacity
from kittyai.worker.protocol import (
    CLAIM_PATH,
    COMPLETE_PATH,
    FAIL_PATH,
    HEARTBEAT_PATH,
    LOG_PATH,
    RELEASE_PATH,
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    FailRequest,
    LeaseRequest,
    LogRequest,
    WorkItem,
)

REQUEST_TIMEOUT_S = 10.0


class OrchestratorUnavailableError(Exception):
    """The orchestrator could not be reached, timed out or had an error: try again later."""


class LeaseLostError(Exception):
    """The item's lease has ended (or the item is gone): stop working on it."""


class WorkRequestError(Exception):
    """The orchestrator refused a request for good: a wrong token or a bad request."""


class WorkClient:
    """Calls one orchestrator's work routes with a token that has `nodes:register`."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        """Use `session` to reach the orchestrator at `url`."""
        self._session = session
        self._url = URL(url)
        self._headers = {"Authorization": f"Bearer {token}"}

    @property
    def url(self) -> URL:
        """Return the orchestrator's base URL."""
        return self._url

    async def claim(self, capacity: NodeCapacity, *, wait_s: float) -> ClaimResponse:
        """Ask for work, waiting up to `wait_s` for some; return what was handed out."""
        body = await self._post(
            CLAIM_PATH.format(node_id=capacity.node_id),
            ClaimRequest(capacity=capacity, wait_s=wait_s),
            # The orchestrator holds the request open for up to wait_s.
            total_s=wait_s + REQUEST_TIMEOUT_S,
        )
        try:
            return ClaimResponse.model_validate(body)
        except ValidationError as err:
            raise OrchestratorUnavailableError(
                f"{self._url} answered a claim with something that is not work"
            ) from err

    async def heartbeat(self, item: WorkItem) -> None:
        """Renew the lease on `item`."""
        await self._post(
            _item_path(HEARTBEAT_PATH, item), LeaseRequest(lease_token=item.lease_token)
        )

    async def log(self, item: WorkItem, lines: list[str]) -> None:
        """Append `lines` to the log of `item`'s run."""
        await self._post(
            _item_path(LOG_PATH, item), LogRequest(lease_token=item.lease_token, lines=lines)
        )

    async def complete(self, item: WorkItem, result: dict[str, Any]) -> None:
        """Report `item` done with `result`."""
        await self._post(
            _item_path(COMPLETE_PATH, item),
            CompleteRequest(lease_token=item.lease_token, result=result),
        )

    async def fail(self, item: WorkItem, message: str, *, retryable: bool) -> None:
        """Report `item` failed, saying why."""
        await self._post(
            _item_path(FAIL_PATH, item),
            FailRequest(lease_token=item.lease_token, message=message, retryable=retryable),
        )

    async def release(self, item: WorkItem) -> None:
        """Give `item` back for another node."""
        await self._post(_item_path(RELEASE_PATH, item), LeaseRequest(lease_token=item.lease_token))

    async def _post(self, path: str, body: BaseModel, *, total_s: float = REQUEST_TIMEOUT_S) -> Any:
        try:
            async with self._session.post(
                self._url.join(URL(path)),
                data=body.model_dump_json(),
                headers={**self._headers, "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=total_s),
            ) as response:
                if response.status == HTTPStatus.NO_CONTENT:
                    return None
                payload = await _json_or_none(response)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise OrchestratorUnavailableError(
                f"cannot reach the orchestrator at {self._url}: {err or type(err).__name__}"
            ) from None
        if response.status < HTTPStatus.BAD_REQUEST:
            return payload
        message = _error_message(payload) or f"HTTP {response.status}"
        if response.status in {HTTPStatus.CONFLICT, HTTPStatus.NOT_FOUND}:
            raise LeaseLostError(message)
        if response.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise OrchestratorUnavailableError(f"the orchestrator at {self._url}: {message}")
        raise WorkRequestError(f"the orchestrator at {self._url} refused: {message}")


def _item_path(pattern: str, item: WorkItem) -> str:
    return pattern.format(item_id=item.id)


async def _json_or_none(response: aiohttp.ClientResponse) -> Any:
    if response.content_type != "application/json":
        return None
    try:
        return await response.json()
    except ValueError:
        return None


def _error_message(payload: Any) -> str | None:
    if isinstance(payload, dict) and isinstance(error := payload.get("error"), dict):
        message = error.get("message")
        return message if isinstance(message, str) else None
    return None
