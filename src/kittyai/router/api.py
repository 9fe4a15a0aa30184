"""The router's HTTP API: OpenAI-compatible chat, models and embeddings, and routing logs.

Any OpenAI-style client can use KITTY as its model. Every answer also says how it
was routed: in `X-Kitty-*` headers, and as a `kitty` field holding the whole
`RoutingDecision` (in the body, or in the final chunk of a stream).
"""

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
import json
import time
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kittyai.contract.routing import RoutingDecision, TokenUsage
from kittyai.embedding import Embedder
from kittyai.http_server import ApiError, read_model
from kittyai.logs import CORRELATION_ID
from kittyai.router.backends.base import Backend, BackendError, BackendReply, ChatRequest
from kittyai.router.engine import (
    PROFILES,
    Answer,
    NoAnswerError,
    Route,
    RoutingEngine,
    Turn,
    UnknownModelError,
)
from kittyai.router.ledger import DecisionLedger, LogQuery
from kittyai.router.options import RouterOptions
from kittyai.router.telemetry import RouterTelemetry
from kittyai.validation import describe_errors

PROFILE_DEFAULT = "kitty-auto"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class ChatMessage(BaseModel):
    """One OpenAI chat message; fields beyond the role pass through untouched."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]


class StreamOptions(BaseModel):
    """OpenAI's `stream_options`."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class KittyExtras(BaseModel):
    """What a KITTY-aware client may add to a chat request."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: str | None = Field(default=None, max_length=128)


class ChatCompletionRequest(BaseModel):
    """The body of `POST /v1/chat/completions`; other OpenAI fields are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = PROFILE_DEFAULT
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None
    kitty: KittyExtras | None = None

    def to_turn(self) -> Turn:
        """Return the turn the engine routes."""
        return Turn(
            profile=self.model,
            request=ChatRequest(
                messages=[message.model_dump(exclude_none=True) for message in self.messages],
                tools=self.tools or None,
                tool_choice=self.tool_choice,
                max_tokens=self.max_completion_tokens or self.max_tokens,
                temperature=self.temperature,
                response_format=self.response_format,
            ),
            conversation_id=self.kitty.conversation_id if self.kitty else None,
            correlation_id=CORRELATION_ID.get(),
        )


class EmbeddingRequest(BaseModel):
    """The body of `POST /v1/embeddings`."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str | list[str] = Field(min_length=1)


class IntentTurn(BaseModel):
    """A turn Home Assistant's own intents answered, reported for the statistics."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: str | None = Field(default=None, max_length=128)
    correlation_id: str | None = Field(default=None, max_length=64)
    latency_ms: float = Field(ge=0)
    intent: str | None = Field(default=None, max_length=64)


@dataclass(frozen=True, slots=True)
class RouterApi:
    """The handlers, bound to one running router."""

    options: RouterOptions
    engine: RoutingEngine
    telemetry: RouterTelemetry
    ledger: DecisionLedger
    embedder: Embedder
    backends: Mapping[str, Backend]

    def add_routes(self, app: web.Application) -> None:
        """Add the router's routes to `app`."""
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/api/routing/logs", self.logs)
        app.router.add_get("/api/routing/stats", self.stats)
        app.router.add_post("/api/routing/decisions", self.intent_turn)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """Route one chat turn; stream it as server-sent events when asked."""
        body = await read_model(request, ChatCompletionRequest)
        events = self.engine.run(body.to_turn())
        first = await _first_event(events, body.model)
        if body.stream:
            return await self._stream(request, body, first, events)
        answer = first if isinstance(first, Answer) else await _last_answer(events)
        completion = {
            **_envelope("chat.completion", answer.decision),
            "choices": [
                {
                    "index": 0,
                    "message": _message(answer.reply),
                    "finish_reason": answer.reply.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": _usage(answer.reply.usage),
            "kitty": answer.decision.model_dump(mode="json"),
        }
        if answer.reply.citations:
            completion["citations"] = list(answer.reply.citations)
        return web.json_response(completion, headers=_decision_headers(answer.decision))

    async def _stream(
        self,
        request: web.Request,
        body: ChatCompletionRequest,
        first: Route | str | Answer,
        events: AsyncIterator[Route | str | Answer],
    ) -> web.StreamResponse:
        route = first if isinstance(first, Route) else None
        response = web.StreamResponse(headers={**_SSE_HEADERS, **_route_headers(route)})
        await response.prepare(request)
        chunk_id = f"chatcmpl-{CORRELATION_ID.get()}"
        created = int(time.time())
        model = route.model if route and route.model else body.model

        async def send(choice: dict[str, Any], **extra: Any) -> None:
            chunk = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "logprobs": None, "finish_reason": None, **choice}],
                **extra,
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"delta": {"role": "assistant", "content": ""}})
        try:
            async for event in _chain(first, events):
                if isinstance(event, str):
                    await send({"delta": {"content": event}})
                elif isinstance(event, Answer):
                    await self._send_end(send, body, event)
        except NoAnswerError as err:
            error = {"code": "no_answer", "message": str(err)}
            await response.write(
                f"data: {json.dumps({'error': error, 'kitty': _json(err.decision)})}\n\n".encode()
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    async def _send_end(send: Any, body: ChatCompletionRequest, answer: Answer) -> None:
        if answer.reply.tool_calls:
            await send({"delta": {"tool_calls": _tool_calls(answer.reply)}})
        extra: dict[str, Any] = {"kitty": _json(answer.decision)}
        if body.stream_options and body.stream_options.include_usage:
            extra["usage"] = _usage(answer.reply.usage)
        if answer.reply.citations:
            extra["citations"] = list(answer.reply.citations)
        await send({"delta": {}, "finish_reason": answer.reply.finish_reason}, **extra)

    async def models(self, _request: web.Request) -> web.Response:
        """List the routing profiles, then the concrete backends."""
        created = int(time.time())
        profiles = [
            _model_entry(name, created, kind="profile", role=None, description=description)
            for name, description in PROFILES.items()
        ]
        backends = [
            _model_entry(
                backend.name,
                created,
                kind="backend",
                role=backend.role.value,
                description=f"{backend.kind.value} model {backend.model}",
            )
            for backend in self.options.backends
        ]
        return web.json_response({"object": "list", "data": profiles + backends})

    async def embeddings(self, request: web.Request) -> web.Response:
        """Embed texts with the offline MiniLM model, or with a named backend."""
        body = await read_model(request, EmbeddingRequest)
        texts = [body.input] if isinstance(body.input, str) else body.input
        model = body.model or self.embedder.id
        if model == self.embedder.id:
            vectors = (await self.embedder.embed(texts)).tolist()
        elif model in self.backends:
            try:
                vectors = await self.backends[model].embed(texts)
            except BackendError as err:
                raise ApiError(HTTPStatus.BAD_GATEWAY, "backend_error", str(err)) from None
        else:
            raise ApiError(
                HTTPStatus.NOT_FOUND, "model_not_found", f"No embedding model named {model!r}"
            )
        return web.json_response(
            {
                "object": "list",
                "model": model,
                "data": [
                    {"object": "embedding", "index": index, "embedding": vector}
                    for index, vector in enumerate(vectors)
                ],
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        )

    async def logs(self, request: web.Request) -> web.Response:
        """Return recorded decisions, newest first, filtered and paginated."""
        try:
            query = LogQuery.model_validate(dict(request.query))
        except ValidationError as err:
            raise ApiError(
                HTTPStatus.UNPROCESSABLE_CONTENT, "invalid_request", describe_errors(err)
            ) from None
        try:
            page = await self.ledger.query(query)
        except ValueError as err:
            raise ApiError(HTTPStatus.BAD_REQUEST, "invalid_cursor", str(err)) from None
        return web.json_response(text=page.model_dump_json())

    async def stats(self, _request: web.Request) -> web.Response:
        """Return the routing statistics as of now."""
        return web.json_response(text=(await self.telemetry.stats()).model_dump_json())

    async def intent_turn(self, request: web.Request) -> web.Response:
        """Record a turn Home Assistant's intents answered without the router."""
        body = await read_model(request, IntentTurn)
        decision = await self.engine.record_intent_turn(
            conversation_id=body.conversation_id,
            correlation_id=body.correlation_id or CORRELATION_ID.get(),
            latency_ms=body.latency_ms,
            intent=body.intent,
        )
        return web.json_response(text=decision.model_dump_json(), status=HTTPStatus.CREATED)


async def _first_event(
    events: AsyncIterator[Route | str | Answer], model: str
) -> Route | str | Answer:
    """Return the turn's first event; errors before it become JSON error answers."""
    try:
        return await anext(events)
    except UnknownModelError:
        raise ApiError(
            HTTPStatus.NOT_FOUND,
            "model_not_found",
            f"{model!r} is neither a routing profile nor a backend; see GET /v1/models",
        ) from None
    except NoAnswerError as err:
        raise _no_answer(err) from None


async def _last_answer(events: AsyncIterator[Route | str | Answer]) -> Answer:
    try:
        async for event in events:
            if isinstance(event, Answer):
                return event
    except NoAnswerError as err:
        raise _no_answer(err) from None
    raise RuntimeError("the routing engine ended a turn without an answer")


def _no_answer(err: NoAnswerError) -> ApiError:
    return ApiError(
        HTTPStatus.BAD_GATEWAY,
        "no_answer",
        f"{err}: {'; '.join(a.error or a.outcome for a in err.decision.attempts) or 'none'}",
        headers=_decision_headers(err.decision),
    )


async def _chain(
    first: Route | str | Answer, rest: AsyncIterator[Route | str | Answer]
) -> AsyncIterator[Route | str | Answer]:
    yield first
    async for event in rest:
        yield event


def _json(decision: RoutingDecision) -> dict[str, Any]:
    return decision.model_dump(mode="json")


def _envelope(kind: str, decision: RoutingDecision) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{decision.id}",
        "object": kind,
        "created": int(decision.at.timestamp()),
        "model": decision.model or decision.profile,
    }


def _message(reply: BackendReply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {key: value for key, value in call.items() if key != "index"}
            for call in _tool_calls(reply)
        ]
    return message


def _tool_calls(reply: BackendReply) -> list[dict[str, Any]]:
    return [
        {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for index, call in enumerate(reply.tool_calls)
    ]


def _usage(usage: TokenUsage) -> dict[str, Any]:
    prompt = usage.input + usage.cache_read + usage.cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output,
        "total_tokens": prompt + usage.output,
        "prompt_tokens_details": {
            "cached_tokens": usage.cache_read,
            "cache_write_tokens": usage.cache_write,
        },
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


def _route_headers(route: Route | None) -> dict[str, str]:
    if route is None:
        return {}
    headers = {"X-Kitty-Tier": route.tier.value, "X-Kitty-Reason": route.reason.value}
    if route.backend:
        headers["X-Kitty-Backend"] = route.backend
    if route.model:
        headers["X-Kitty-Model"] = route.model
    if route.confidence is not None:
        headers["X-Kitty-Confidence"] = f"{route.confidence:.4f}"
    return headers


def _decision_headers(decision: RoutingDecision) -> dict[str, str]:
    route = Route(
        decision.tier, decision.backend, decision.model, decision.reason, decision.confidence
    )
    return {
        **_route_headers(route),
        "X-Kitty-Cost-USD": f"{decision.cost_usd:.6f}",
        "X-Kitty-Latency-Ms": f"{decision.latency_ms:.1f}",
    }


def _model_entry(
    name: str, created: int, *, kind: str, role: str | None, description: str
) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "kitty",
        "kitty": {"kind": kind, "role": role, "description": description},
    }
