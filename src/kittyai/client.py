"""Async client for the HTTP API every KITTY service serves.

The Home Assistant integration uses it with HA's shared aiohttp session, so it
never creates a session of its own. No message of its errors contains the token.
"""

from collections.abc import AsyncIterator, Mapping
from enum import StrEnum
from http import HTTPStatus
import json
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError
from yarl import URL

from kittyai.contract import ServiceInfo
from kittyai.contract.routing import RouterStats, RoutingDecision

DEFAULT_TIMEOUT = 10.0
# A chat turn has no total limit: a model may think, call tools and stream for long.
# Only silence counts: the router sends a chunk at least this often while it works.
CHAT_READ_TIMEOUT = 120.0


class KittyError(Exception):
    """Base error of the KITTY client."""


class KittyConnectionError(KittyError):
    """The service could not be reached or timed out."""


class KittyAuthError(KittyError):
    """The service rejected the token."""


class KittyResponseError(KittyError):
    """The service answered, but not as a KITTY service would."""


class KittyRequestError(KittyError):
    """A service refused a request (HTTP 4xx), saying why."""

    def __init__(self, code: str, message: str, status: int) -> None:
        """Keep the service's error code, its message and the HTTP status."""
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class ModelKind(StrEnum):
    """What a model id of the router stands for."""

    # A routing policy: the router picks the backend.
    PROFILE = "profile"
    # One configured model server.
    BACKEND = "backend"


class RouterModel(BaseModel):
    """One entry of the router's `GET /v1/models`."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: ModelKind
    role: str | None = None
    description: str | None = None


class _ModelInfo(BaseModel):
    kind: ModelKind
    role: str | None = None
    description: str | None = None


class _ModelEntry(BaseModel):
    id: str
    kitty: _ModelInfo


class _ModelList(BaseModel):
    data: list[_ModelEntry]


class KittyClient:
    """Talks to one KITTY service over HTTP with a bearer token."""

    # The error a 4xx with a KITTY error body raises; None: such a refusal is an
    # unexpected answer like any other.
    refusal_error: ClassVar[type[KittyRequestError] | None] = None
    # Success besides the status a call expects: 200 as well as 201 where a request
    # may find what it would have made.
    also_success: ClassVar[frozenset[HTTPStatus]] = frozenset()
    # Whether a 403 is a refusal the service explains (a missing scope, a path outside
    # the share) rather than a token it does not know.
    forbidden_is_refusal: ClassVar[bool] = False

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str | URL,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Use `session` to reach the service at `url`."""
        self._session = session
        self._url = URL(str(url))
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._chat_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout, sock_read=CHAT_READ_TIMEOUT
        )

    @property
    def url(self) -> URL:
        """Return the service's base URL."""
        return self._url

    async def get_info(self) -> ServiceInfo:
        """Return who the service is; this also proves the token works."""
        body = await self._request_json("GET", "/api/info")
        try:
            return ServiceInfo.model_validate(body)
        except ValidationError as err:
            raise KittyResponseError(f"{self._url} is not a KITTY service") from err

    async def get_routing_stats(self) -> RouterStats:
        """Return the router's routing statistics as of now."""
        body = await self._request_json("GET", "/api/routing/stats")
        try:
            return RouterStats.model_validate(body)
        except ValidationError as err:
            raise KittyResponseError(f"{self._url} sent invalid routing statistics") from err

    async def list_models(self) -> list[RouterModel]:
        """Return the router's routing profiles, then its backends."""
        body = await self._request_json("GET", "/v1/models")
        try:
            models = _ModelList.model_validate(body)
        except ValidationError as err:
            raise KittyResponseError(f"{self._url} sent an invalid model list") from err
        return [
            RouterModel(
                id=entry.id,
                kind=entry.kitty.kind,
                role=entry.kitty.role,
                description=entry.kitty.description,
            )
            for entry in models.data
        ]

    async def report_intent_turn(
        self,
        *,
        conversation_id: str | None,
        latency_ms: float,
        intent: str | None,
        correlation_id: str | None = None,
    ) -> RoutingDecision:
        """Record a turn Home Assistant's intents answered; return the router's decision."""
        body = await self._request_json(
            "POST",
            "/api/routing/decisions",
            json_body={
                "conversation_id": conversation_id,
                "latency_ms": latency_ms,
                "intent": intent,
                "correlation_id": correlation_id,
            },
            expected=HTTPStatus.CREATED,
        )
        try:
            return RoutingDecision.model_validate(body)
        except ValidationError as err:
            raise KittyResponseError(f"{self._url} sent an invalid routing decision") from err

    async def chat_stream(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Stream one chat completion: yield each `chat.completion.chunk` the router sends.

        `body` is an OpenAI Chat Completions request; `stream` is set here. The last
        chunk carries `finish_reason` and the turn's `RoutingDecision` as `kitty`.
        """
        path = "/v1/chat/completions"
        try:
            async with self._session.post(
                self._url.join(URL(path)),
                json={**body, "stream": True},
                headers=self._headers,
                timeout=self._chat_timeout,
            ) as response:
                await self._raise_for_status(response, path, HTTPStatus.OK)
                async for line in response.content:
                    if (chunk := self._parse_event(line, path)) is None:
                        return
                    if chunk:
                        yield chunk
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as err:
            raise KittyConnectionError(f"Lost {self._url} while it answered") from err
        raise KittyResponseError(f"{self._url}{path} ended its stream without [DONE]")

    def _parse_event(self, line: bytes, path: str) -> dict[str, Any] | None:
        """Return the chunk of one server-sent event line; {} for other lines, None at the end."""
        if not line.startswith(b"data:"):
            return {}
        data = line.removeprefix(b"data:").strip()
        if data == b"[DONE]":
            return None
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            raise KittyResponseError(f"{self._url}{path} sent an event that is no JSON object")
        if "error" in chunk:
            raise KittyResponseError(f"{self._url}{path} failed: {_error_message(chunk)}")
        return chunk

    async def _request_json(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        expected: HTTPStatus = HTTPStatus.OK,
    ) -> object:
        try:
            async with self._session.request(
                method,
                self._url.join(URL(path)),
                json=json_body,
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                await self._raise_for_status(response, path, expected)
                return await response.json(content_type=None)
        except (aiohttp.ClientConnectionError, TimeoutError) as err:
            raise KittyConnectionError(f"Cannot reach {self._url}") from err
        except (aiohttp.ContentTypeError, ValueError) as err:
            raise KittyResponseError(f"{self._url}{path} did not answer JSON") from err

    async def _raise_for_status(
        self, response: aiohttp.ClientResponse, path: str, expected: HTTPStatus
    ) -> None:
        """Raise the error an unexpected status means, with what the service said.

        A client whose service explains its refusals (`refusal_error`) raises that
        error for a 4xx with a KITTY error body; a wrong token stays an auth error.
        """
        status = response.status
        if status == expected or status in self.also_success:
            return
        auth_statuses = (
            {HTTPStatus.UNAUTHORIZED}
            if self.forbidden_is_refusal
            else {HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN}
        )
        if self.refusal_error is not None and status not in auth_statuses:
            await self._raise_explained_refusal(response, self.refusal_error)
        if response.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            raise KittyAuthError(f"{self._url} rejected the token")
        message = f"{self._url}{path} answered HTTP {response.status}"
        try:
            body = await response.json(content_type=None)
        except ValueError:
            body = None
        if isinstance(body, dict) and "error" in body:
            message = f"{message}: {_error_message(body)}"
        raise KittyResponseError(message)

    @staticmethod
    async def _raise_explained_refusal(
        response: aiohttp.ClientResponse, error: type[KittyRequestError]
    ) -> None:
        """Raise `error` for a 4xx whose KITTY error body gives a code and a message."""
        if not HTTPStatus.BAD_REQUEST <= response.status < HTTPStatus.INTERNAL_SERVER_ERROR:
            return
        try:
            body = await response.json(content_type=None)
        except ValueError:
            return
        refusal = body.get("error") if isinstance(body, dict) else None
        if isinstance(refusal, dict) and refusal.get("code") and refusal.get("message"):
            raise error(str(refusal["code"]), str(refusal["message"]), response.status)

    def _parse[M: BaseModel](self, model: type[M], body: object, what: str) -> M:
        """Return `body` as `model`; a body that does not fit is the service's fault."""
        try:
            return model.model_validate(body)
        except ValidationError as err:
            raise KittyResponseError(f"{self._url} sent {what} that is not valid") from err


def path_segment(value: str) -> str:
    """Return `value` as one path segment: ids and names cannot climb out of their route."""
    return quote(value, safe="")


def _error_message(body: Mapping[str, Any]) -> str:
    """Return the message of a KITTY error body, `{"error": {"code", "message"}}`."""
    error = body["error"]
    if isinstance(error, Mapping) and error.get("message"):
        return str(error["message"])
    return str(error)
