"""Protocol-faithful fakes of the paid and local model servers KITTY's router calls.

Each fake is a real aiohttp server on 127.0.0.1 speaking its vendor's wire format
(bodies, streams, usage, error bodies, authentication), answering from a script:

    async with FakeOpenAI(api_key="sk-test") as fake:
        fake.enqueue(ScriptedReply("The lights are on."), ScriptedError(429, retry_after=2))
        fake.respond_with(lambda body: ScriptedReply("OK."))  # once the queue is empty
        ... call fake.url ...
        fake.requests[0].body["messages"]

Replies are tokenised word by word ("The", " lights", " are", " on."): each word is one
token, streamed as one chunk, counted as one output token and given one logprob.
"""

from abc import ABC, abstractmethod
import asyncio
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
import hashlib
import itertools
import json
import math
import random
import re
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from tests.helpers.loopback_server import RecordingServer

DEFAULT_REPLY_TEXT = "OK."
EMBEDDING_DIMENSIONS = 64
# The token the fakes offer as every position's runner-up.
RUNNER_UP_TOKEN = " perhaps"
_TOKEN = re.compile(r"\s*\S+|\s+$")
# Where the middleware leaves the parsed body for the handlers.
_BODY = web.RequestKey("body", dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptedToolCall:
    """A tool call with the id the fake gave it."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    """What the model answers.

    Token counts follow OpenAI: `prompt_tokens` is the whole prompt, cached and
    cache-written tokens included; `output_tokens` includes `reasoning_tokens`. Each
    fake reports them the way its vendor does (Anthropic's `input_tokens` leaves the
    cached and written tokens out; Ollama's `prompt_eval_count` leaves the cached out).
    """

    content: str = ""
    # (tool name, arguments) pairs.
    tool_calls: Sequence[tuple[str, Mapping[str, Any]]] = ()
    # Every token's logprob, or one per token (word).
    token_logprob: float | Sequence[float] = -0.05
    # How far below each token its runner-up is.
    top2_gap: float = 3.0
    # None: one per word of the request's messages.
    prompt_tokens: int | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    # None: one per token of `content`, one per tool call, plus `reasoning_tokens`.
    output_tokens: int | None = None
    reasoning_tokens: int = 0
    # URLs of the sources, served Perplexity style (`citations` and `search_results`).
    citations: Sequence[str] = ()
    # In OpenAI's terms (stop, length, tool_calls, content_filter); None: tool_calls or stop.
    finish_reason: str | None = None
    # Seconds before the answer starts, and between two streamed tokens.
    delay: float = 0.0
    chunk_delay: float = 0.0
    # None: the model the request named.
    model: str | None = None

    def __post_init__(self) -> None:
        """Check that per-token logprobs match the tokens."""
        if isinstance(self.token_logprob, float | int):
            return
        if len(self.token_logprob) != len(self.tokens):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.token_logprob)} logprobs")

    @property
    def tokens(self) -> list[str]:
        """Return the tokens `content` is streamed in: its words, with leading whitespace."""
        return _TOKEN.findall(self.content)

    def logprob(self, index: int) -> float:
        """Return the logprob of token `index`."""
        if isinstance(self.token_logprob, float | int):
            return float(self.token_logprob)
        return float(self.token_logprob[index])

    @property
    def finish(self) -> str:
        """Return the finish reason, in OpenAI's terms."""
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")

    def prompt_size(self, body: dict[str, Any]) -> int:
        """Return the prompt's token count: scripted, or one per word of the request."""
        if self.prompt_tokens is not None:
            return self.prompt_tokens
        return len(re.findall(r"\S+", " ".join(_strings(body))))

    @property
    def output_size(self) -> int:
        """Return the output token count, reasoning included."""
        if self.output_tokens is not None:
            return self.output_tokens
        return len(self.tokens) + len(self.tool_calls) + self.reasoning_tokens


@dataclass(frozen=True, slots=True)
class ScriptedError:
    """A failure, answered in the vendor's error body with `status`.

    With `after_text`, a streaming request first gets HTTP 200 and that text, then the
    vendor's in-stream error; a non-streaming request gets the plain HTTP error.
    """

    status: int = 500
    message: str = "The server had an error while processing your request."
    retry_after: float | None = None
    after_text: str | None = None
    delay: float = 0.0


type Scripted = ScriptedReply | ScriptedError
type Responder = Callable[[dict[str, Any]], Scripted]


def embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """Return the fakes' embedding of `text`: a unit vector, the sum of one per word.

    Texts sharing words are close, so similarity behaves plausibly; the same text
    always gives the same vector.
    """
    vector = [0.0] * dimensions
    for word in re.findall(r"\w+", text.lower()) or [""]:
        rng = random.Random(hashlib.sha256(word.encode()).digest())
        vector = [value + rng.gauss(0.0, 1.0) for value in vector]
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector]


class FakeLLMServer(RecordingServer, ABC):
    """A scripted model server; subclasses speak one vendor's protocol."""

    def __init__(self, *, api_key: str | None = None) -> None:
        """Serve on a free port once entered; with `api_key`, require it like the vendor."""
        super().__init__()
        self.api_key = api_key
        self._queue: deque[Scripted] = deque()
        self._responder: Responder | None = None
        self._ids = itertools.count(1)

    def enqueue(self, *items: Scripted) -> None:
        """Answer the next requests with `items`, in order."""
        self._queue.extend(items)

    def respond_with(self, responder: Responder | None) -> None:
        """Answer from `responder(body)` whenever the queue is empty."""
        self._responder = responder

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_authenticate])
        self._add_routes(app.router)
        return app

    @abstractmethod
    def _add_routes(self, router: web.UrlDispatcher) -> None:
        """Route the vendor's endpoints."""

    @abstractmethod
    def _authorized(self, request: web.Request) -> web.Response | None:
        """Return the vendor's refusal when the request lacks the key, else None."""

    @abstractmethod
    def _error_response(self, error: ScriptedError) -> web.Response:
        """Return `error` in the vendor's error body."""

    def _next(self, body: dict[str, Any]) -> Scripted:
        if self._queue:
            return self._queue.popleft()
        if self._responder is not None:
            return self._responder(body)
        return ScriptedReply(DEFAULT_REPLY_TEXT)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def _tool_calls(self, reply: ScriptedReply, prefix: str) -> list[ScriptedToolCall]:
        return [
            ScriptedToolCall(id=self._new_id(prefix), name=name, arguments=arguments)
            for name, arguments in reply.tool_calls
        ]

    @web.middleware
    async def _record_and_authenticate(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        body = await self._record(request)
        request[_BODY] = body
        if (refusal := self._authorized(request)) is not None:
            return refusal
        if not isinstance(body, dict):
            return self._error_response(ScriptedError(400, "The request body is not valid JSON."))
        return await handler(request)

    async def _script(self, body: dict[str, Any]) -> Scripted:
        """Return what to answer `body` with, after the scripted delay."""
        item = self._next(body)
        if item.delay:
            await asyncio.sleep(item.delay)
        return item

    async def _open_stream(self, request: web.Request, content_type: str) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        return response


class _StreamWriter:
    """Writes one streamed answer, pausing between chunks as scripted."""

    def __init__(self, response: web.StreamResponse, chunk_delay: float) -> None:
        """Write to `response`."""
        self._response = response
        self._chunk_delay = chunk_delay

    async def write(self, text: str) -> None:
        """Send one chunk."""
        await self._response.write(text.encode())

    async def pause_before_token(self, index: int) -> None:
        """Wait the scripted time between two tokens."""
        if index and self._chunk_delay:
            await asyncio.sleep(self._chunk_delay)

    async def sse(self, data: Any, event: str | None = None) -> None:
        """Send one server-sent event."""
        payload = data if isinstance(data, str) else json.dumps(data)
        await self.write(
            f"event: {event}\ndata: {payload}\n\n" if event else f"data: {payload}\n\n"
        )

    async def ndjson(self, data: Any) -> None:
        """Send one line of JSON."""
        await self.write(json.dumps(data) + "\n")

    async def end(self) -> web.StreamResponse:
        """Finish the answer."""
        await self._response.write_eof()
        return self._response


# --------------------------------------------------------------------------- OpenAI


_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


class FakeOpenAI(FakeLLMServer):
    """OpenAI: Chat Completions, Responses and embeddings under `/v1`.

    With `perplexity=True` it is Perplexity instead: Chat Completions at the root,
    no logprobs, and user and assistant turns that must alternate.
    """

    def __init__(self, *, api_key: str | None = None, perplexity: bool = False) -> None:
        """Serve OpenAI, or Perplexity with `perplexity`."""
        super().__init__(api_key=api_key)
        self.perplexity = perplexity

    @property
    def url(self) -> str:
        """Return the base URL: `…/v1` for OpenAI, the root for Perplexity."""
        return self.root if self.perplexity else f"{self.root}/v1"

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        if self.perplexity:
            router.add_post("/chat/completions", self._chat_completions)
            return
        router.add_post("/v1/chat/completions", self._chat_completions)
        router.add_post("/v1/responses", self._responses)
        router.add_post("/v1/embeddings", self._embeddings)

    def _authorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return self._error_response(
                ScriptedError(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                )
            )
        key = header.removeprefix("Bearer ")
        if key != self.api_key:
            # OpenAI shows the start and the end of the key it refused.
            masked = f"{key[:3]}{'*' * max(len(key) - 7, 0)}{key[-4:]}"
            return self._error_response(
                ScriptedError(
                    401,
                    f"Incorrect API key provided: {masked}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                )
            )
        return None

    def _error_response(self, error: ScriptedError) -> web.Response:
        return web.json_response(
            {"error": _openai_error(error)},
            status=error.status,
            headers=_retry_after_header(error),
        )

    # ---- Chat Completions

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = request[_BODY]
        if problem := self._chat_problem(body):
            return self._error_response(ScriptedError(400, problem))
        item = await self._script(body)
        streaming = bool(body.get("stream"))
        if isinstance(item, ScriptedError) and (item.after_text is None or not streaming):
            return self._error_response(item)
        if not streaming:
            assert isinstance(item, ScriptedReply)
            return web.json_response(self._completion(body, item))
        return await self._completion_stream(request, body, item)

    def _chat_problem(self, body: dict[str, Any]) -> str | None:
        """Return what OpenAI (or Perplexity) would refuse in this request, if anything."""
        messages = body.get("messages")
        if not body.get("model") or not isinstance(messages, list) or not messages:
            return "you must provide a model parameter and a non-empty messages array"
        if self.perplexity:
            turns = [m["role"] for m in messages if m.get("role") != "system"]
            expected = itertools.cycle(["user", "assistant"])
            if any(role != next(expected) for role in turns):
                return (
                    "After the (optional) system message(s), user and assistant roles "
                    "should be alternating."
                )
            if turns[-1:] != ["user"]:
                return "Last message must have role `user`."
            return None
        call_ids: set[str] = set()
        for message in messages:
            call_ids |= {call["id"] for call in message.get("tool_calls") or ()}
            if message.get("role") == "tool" and message.get("tool_call_id") not in call_ids:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'."
                )
        return None

    def _logprobs_wanted(self, body: dict[str, Any]) -> int | None:
        """Return how many alternatives to give per token, or None for no logprobs."""
        if self.perplexity or not body.get("logprobs"):
            return None
        return int(body.get("top_logprobs") or 0)

    def _perplexity_fields(self, reply: ScriptedReply) -> dict[str, Any]:
        if not reply.citations:
            return {}
        return {
            "citations": list(reply.citations),
            "search_results": [
                {"title": f"Source {index}", "url": url, "date": None}
                for index, url in enumerate(reply.citations, 1)
            ],
        }

    def _completion(self, body: dict[str, Any], reply: ScriptedReply) -> dict[str, Any]:
        calls = self._tool_calls(reply, "call_")
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.content if reply.content or not calls else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = [_openai_tool_call(call) for call in calls]
        top = self._logprobs_wanted(body)
        logprobs = None
        if top is not None:
            logprobs = {
                "content": [_logprob_entry(reply, i, top) for i in range(len(reply.tokens))],
                "refusal": None,
            }
        return {
            "id": self._new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": reply.finish,
                }
            ],
            "usage": _chat_usage(body, reply),
            "system_fingerprint": "fp_fake",
            **self._perplexity_fields(reply),
        }

    async def _completion_stream(
        self, request: web.Request, body: dict[str, Any], item: Scripted
    ) -> web.StreamResponse:
        completion_id = self._new_id("chatcmpl-")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        reply = item if isinstance(item, ScriptedReply) else ScriptedReply(item.after_text or "")
        extra = self._perplexity_fields(reply)
        top = self._logprobs_wanted(body)

        def chunk(
            delta: dict[str, Any], finish: str | None = None, logprobs: Any = None
        ) -> dict[str, Any]:
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": reply.model or body["model"],
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
                ],
                **extra,
            }
            if include_usage:
                data["usage"] = None
            return data

        writer = _StreamWriter(
            await self._open_stream(request, "text/event-stream"), reply.chunk_delay
        )
        await writer.sse(chunk({"role": "assistant", "content": "", "refusal": None}))
        for index, token in enumerate(reply.tokens):
            await writer.pause_before_token(index)
            logprobs = None
            if top is not None:
                logprobs = {"content": [_logprob_entry(reply, index, top)], "refusal": None}
            await writer.sse(chunk({"content": token}, logprobs=logprobs))
        if isinstance(item, ScriptedError):
            await writer.sse({"error": _openai_error(item)})
            return await writer.end()
        for index, call in enumerate(self._tool_calls(reply, "call_")):
            arguments = json.dumps(call.arguments)
            head = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            await writer.sse(chunk({"tool_calls": [head]}))
            for piece in _pieces(arguments):
                await writer.sse(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
        await writer.sse(chunk({}, finish=reply.finish))
        if include_usage:
            final = chunk({})
            final["choices"] = []
            final["usage"] = _chat_usage(body, reply)
            await writer.sse(final)
        await writer.sse("[DONE]")
        return await writer.end()

    # ---- Responses

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = request[_BODY]
        if problem := _responses_problem(body):
            return self._error_response(ScriptedError(400, problem))
        item = await self._script(body)
        streaming = bool(body.get("stream"))
        if isinstance(item, ScriptedError) and (item.after_text is None or not streaming):
            return self._error_response(item)
        response_id = self._new_id("resp_")
        if not streaming:
            assert isinstance(item, ScriptedReply)
            output = self._response_output(body, item)
            return web.json_response(self._response(response_id, body, item, output))
        return await self._responses_stream(request, response_id, body, item)

    def _response(
        self,
        response_id: str,
        body: dict[str, Any],
        reply: ScriptedReply,
        output: list[dict[str, Any]],
        status: str | None = None,
    ) -> dict[str, Any]:
        incomplete = reply.finish in {"length", "content_filter"}
        if status is None:
            status = "incomplete" if incomplete else "completed"
        usage = None
        if status != "in_progress":
            prompt = reply.prompt_size(body)
            input_details: dict[str, int] = {"cached_tokens": reply.cached_tokens}
            if reply.cache_write_tokens:
                input_details["cache_write_tokens"] = reply.cache_write_tokens
            usage = {
                "input_tokens": prompt,
                "input_tokens_details": input_details,
                "output_tokens": reply.output_size,
                "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
                "total_tokens": prompt + reply.output_size,
            }
        reason = "max_output_tokens" if reply.finish == "length" else reply.finish
        return {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": {"reason": reason} if status == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": reply.model or body["model"],
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text", {"format": {"type": "text"}}),
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "usage": usage,
            "metadata": {},
        }

    def _response_output(self, body: dict[str, Any], reply: ScriptedReply) -> list[dict[str, Any]]:
        top = _responses_logprobs_wanted(body)
        output: list[dict[str, Any]] = []
        if reply.content:
            part: dict[str, Any] = {"type": "output_text", "text": reply.content, "annotations": []}
            if top is not None:
                part["logprobs"] = [_logprob_entry(reply, i, top) for i in range(len(reply.tokens))]
            output.append(_response_message(self._new_id("msg_"), "completed", [part]))
        output.extend(
            _response_function_call(call, "completed", self._new_id("fc_"))
            for call in self._tool_calls(reply, "call_")
        )
        return output

    async def _responses_stream(
        self, request: web.Request, response_id: str, body: dict[str, Any], item: Scripted
    ) -> web.StreamResponse:
        reply = item if isinstance(item, ScriptedReply) else ScriptedReply(item.after_text or "")
        top = _responses_logprobs_wanted(body)
        writer = _StreamWriter(
            await self._open_stream(request, "text/event-stream"), reply.chunk_delay
        )
        sequence = itertools.count()

        async def send(event: str, data: dict[str, Any]) -> None:
            await writer.sse({"type": event, "sequence_number": next(sequence), **data}, event)

        started = self._response(response_id, body, reply, [], status="in_progress")
        await send("response.created", {"response": started})
        await send("response.in_progress", {"response": started})
        output: list[dict[str, Any]] = []
        message_id = self._new_id("msg_")
        where = {"item_id": message_id, "output_index": 0, "content_index": 0}
        if reply.tokens:
            await send(
                "response.output_item.added",
                {"output_index": 0, "item": _response_message(message_id, "in_progress", [])},
            )
            empty_part = {"type": "output_text", "text": "", "annotations": []}
            await send("response.content_part.added", {**where, "part": empty_part})
            for index, token in enumerate(reply.tokens):
                await writer.pause_before_token(index)
                logprobs = [_logprob_entry(reply, index, top)] if top is not None else []
                await send(
                    "response.output_text.delta", {**where, "delta": token, "logprobs": logprobs}
                )
        if isinstance(item, ScriptedError):
            failed = self._response(response_id, body, reply, [], status="failed")
            failed["error"] = {"code": _responses_error_code(item), "message": item.message}
            await send("response.failed", {"response": failed})
            return await writer.end()
        if reply.tokens:
            part = {"type": "output_text", "text": reply.content, "annotations": []}
            await send("response.output_text.done", {**where, "text": reply.content})
            await send("response.content_part.done", {**where, "part": part})
            message = _response_message(message_id, "completed", [part])
            await send("response.output_item.done", {"output_index": 0, "item": message})
            output.append(message)
        for call in self._tool_calls(reply, "call_"):
            index = len(output)
            item_id = self._new_id("fc_")
            await send(
                "response.output_item.added",
                {
                    "output_index": index,
                    "item": _response_function_call(call, "in_progress", item_id, arguments=""),
                },
            )
            arguments = json.dumps(call.arguments)
            for piece in _pieces(arguments):
                await send(
                    "response.function_call_arguments.delta",
                    {"item_id": item_id, "output_index": index, "delta": piece},
                )
            await send(
                "response.function_call_arguments.done",
                {"item_id": item_id, "output_index": index, "arguments": arguments},
            )
            done = _response_function_call(call, "completed", item_id)
            await send("response.output_item.done", {"output_index": index, "item": done})
            output.append(done)
        final = self._response(response_id, body, reply, output)
        await send(f"response.{final['status']}", {"response": final})
        return await writer.end()

    # ---- Embeddings

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = request[_BODY]
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not body.get("model") or not isinstance(texts, list) or not texts:
            return self._error_response(ScriptedError(400, "'input' is a required property"))
        dimensions = int(body.get("dimensions") or EMBEDDING_DIMENSIONS)
        tokens = sum(len(text.split()) for text in texts)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "object": "embedding",
                        "index": index,
                        "embedding": embedding(text, dimensions),
                    }
                    for index, text in enumerate(texts)
                ],
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


def _openai_error(error: ScriptedError) -> dict[str, Any]:
    kind, code = _OPENAI_ERROR_TYPES.get(
        error.status,
        ("server_error", None) if error.status >= 500 else ("invalid_request_error", None),
    )
    return {"message": error.message, "type": kind, "param": None, "code": code}


def _responses_error_code(error: ScriptedError) -> str:
    return "rate_limit_exceeded" if error.status == 429 else "server_error"


def _chat_usage(body: dict[str, Any], reply: ScriptedReply) -> dict[str, Any]:
    prompt = reply.prompt_size(body)
    prompt_details: dict[str, int] = {"cached_tokens": reply.cached_tokens, "audio_tokens": 0}
    if reply.cache_write_tokens:
        prompt_details["cache_write_tokens"] = reply.cache_write_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": reply.output_size,
        "total_tokens": prompt + reply.output_size,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": reply.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openai_tool_call(call: ScriptedToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
    }


def _responses_problem(body: dict[str, Any]) -> str | None:
    if not body.get("model"):
        return "Missing required parameter: 'model'."
    items = body.get("input")
    if not isinstance(items, str | list):
        return "Missing required parameter: 'input'."
    call_ids: set[str] = set()
    for item in items if isinstance(items, list) else ():
        if item.get("type") == "function_call":
            call_ids.add(item.get("call_id"))
        if item.get("type") == "function_call_output" and item.get("call_id") not in call_ids:
            return (
                f"No tool call found for function call output with call_id {item.get('call_id')}."
            )
    return None


def _responses_logprobs_wanted(body: dict[str, Any]) -> int | None:
    if "message.output_text.logprobs" not in (body.get("include") or ()):
        return None
    return int(body.get("top_logprobs") or 0)


def _response_message(
    message_id: str, status: str, content: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _response_function_call(
    call: ScriptedToolCall, status: str, item_id: str, *, arguments: str | None = None
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.id,
        "name": call.name,
        "arguments": json.dumps(call.arguments) if arguments is None else arguments,
    }


# --------------------------------------------------------------------------- Anthropic


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_STOP_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}


class FakeAnthropic(FakeLLMServer):
    """Anthropic's Messages API at `/v1/messages`."""

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/messages", self._messages)

    def _authorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        key = request.headers.get("x-api-key")
        if key is None:
            return self._error_response(ScriptedError(401, "x-api-key header is required"))
        if key != self.api_key:
            return self._error_response(ScriptedError(401, "invalid x-api-key"))
        return None

    def _error_response(self, error: ScriptedError) -> web.Response:
        return web.json_response(
            _anthropic_error(error) | {"request_id": self._new_id("req_")},
            status=error.status,
            headers=_retry_after_header(error) | {"request-id": self._new_id("req_")},
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = request[_BODY]
        if problem := _anthropic_problem(request, body):
            return self._error_response(ScriptedError(400, problem))
        item = await self._script(body)
        streaming = bool(body.get("stream"))
        if isinstance(item, ScriptedError) and (item.after_text is None or not streaming):
            return self._error_response(item)
        message_id = self._new_id("msg_")
        if not streaming:
            assert isinstance(item, ScriptedReply)
            blocks: list[dict[str, Any]] = []
            if item.content:
                blocks.append({"type": "text", "text": item.content})
            blocks.extend(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                for call in self._tool_calls(item, "toolu_")
            )
            message = _anthropic_message(message_id, body, item, blocks)
            return web.json_response(message | {"usage": _anthropic_usage(body, item)})
        return await self._messages_stream(request, message_id, body, item)

    async def _messages_stream(
        self, request: web.Request, message_id: str, body: dict[str, Any], item: Scripted
    ) -> web.StreamResponse:
        reply = item if isinstance(item, ScriptedReply) else ScriptedReply(item.after_text or "")
        writer = _StreamWriter(
            await self._open_stream(request, "text/event-stream"), reply.chunk_delay
        )

        async def send(event: str, data: dict[str, Any]) -> None:
            await writer.sse({"type": event, **data}, event)

        usage = _anthropic_usage(body, reply)
        start = _anthropic_message(message_id, body, reply, [], final=False)
        start["usage"] = usage | {"output_tokens": 1}
        await send("message_start", {"message": start})
        index = 0
        if reply.tokens:
            block = {"type": "text", "text": ""}
            await send("content_block_start", {"index": index, "content_block": block})
            await send("ping", {})
            for position, token in enumerate(reply.tokens):
                await writer.pause_before_token(position)
                delta = {"type": "text_delta", "text": token}
                await send("content_block_delta", {"index": index, "delta": delta})
        if isinstance(item, ScriptedError):
            await send("error", _anthropic_error(item))
            return await writer.end()
        if reply.tokens:
            await send("content_block_stop", {"index": index})
            index += 1
        for call in self._tool_calls(reply, "toolu_"):
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            await send("content_block_start", {"index": index, "content_block": block})
            for piece in ["", *_pieces(json.dumps(call.arguments))]:
                delta = {"type": "input_json_delta", "partial_json": piece}
                await send("content_block_delta", {"index": index, "delta": delta})
            await send("content_block_stop", {"index": index})
            index += 1
        stop = {"stop_reason": _ANTHROPIC_STOP_REASONS[reply.finish], "stop_sequence": None}
        await send("message_delta", {"delta": stop, "usage": usage})
        await send("message_stop", {})
        return await writer.end()


def _anthropic_error(error: ScriptedError) -> dict[str, Any]:
    kind = _ANTHROPIC_ERROR_TYPES.get(error.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def _anthropic_problem(request: web.Request, body: dict[str, Any]) -> str | None:
    """Return what the Messages API would refuse in this request, if anything."""
    if "anthropic-version" not in request.headers:
        return "anthropic-version: header is required"
    missing = [
        name
        for name, valid in (
            ("model", bool(body.get("model"))),
            ("max_tokens", isinstance(body.get("max_tokens"), int)),
            ("messages", isinstance(body.get("messages"), list) and bool(body["messages"])),
        )
        if not valid
    ]
    if missing:
        return f"{missing[0]}: Field required"
    previous_tool_uses: set[str] = set()
    for number, message in enumerate(body["messages"]):
        if problem := _anthropic_message_problem(number, message, previous_tool_uses):
            return problem
        previous_tool_uses = {
            block["id"] for block in _blocks(message) if block.get("type") == "tool_use"
        }
    return None


def _anthropic_message_problem(
    number: int, message: dict[str, Any], previous_tool_uses: set[str]
) -> str | None:
    if message.get("role") not in {"user", "assistant"}:
        return f"messages.{number}.role: Input should be 'user' or 'assistant'"
    blocks = _blocks(message)
    if not blocks:
        return f"messages.{number}: all messages must have non-empty content"
    for block in blocks:
        if block.get("type") == "text" and not block.get("text"):
            return f"messages.{number}: text content blocks must be non-empty"
        if block.get("type") == "tool_result" and block.get("tool_use_id") not in (
            previous_tool_uses
        ):
            return (
                f"messages.{number}.content: unexpected `tool_use_id` found in `tool_result` "
                f"blocks: {block.get('tool_use_id')}. Each `tool_result` block must have a "
                "corresponding `tool_use` block in the previous message."
            )
    return None


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [{"type": "text", "text": content}] if isinstance(content, str) else content or []


def _anthropic_message(
    message_id: str,
    body: dict[str, Any],
    reply: ScriptedReply,
    content: list[dict[str, Any]],
    *,
    final: bool = True,
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model or body["model"],
        "content": content,
        "stop_reason": _ANTHROPIC_STOP_REASONS[reply.finish] if final else None,
        "stop_sequence": None,
    }


def _anthropic_usage(body: dict[str, Any], reply: ScriptedReply) -> dict[str, Any]:
    uncached = reply.prompt_size(body) - reply.cached_tokens - reply.cache_write_tokens
    return {
        "input_tokens": max(uncached, 0),
        "cache_creation_input_tokens": reply.cache_write_tokens,
        "cache_read_input_tokens": reply.cached_tokens,
        "output_tokens": reply.output_size,
        "service_tier": "standard",
    }


# --------------------------------------------------------------------------- Ollama


class FakeOllama(FakeLLMServer):
    """Ollama's native API: `/api/chat` (NDJSON stream by default) and `/api/embed`.

    Ollama takes no key; with `api_key` it acts like ollama.com, wanting a bearer token.
    """

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/chat", self._chat)
        router.add_post("/api/embed", self._embed)

    def _authorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error_response(ScriptedError(401, "unauthorized"))
        return None

    def _error_response(self, error: ScriptedError) -> web.Response:
        return web.json_response(
            {"error": error.message}, status=error.status, headers=_retry_after_header(error)
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = request[_BODY]
        if not body.get("model"):
            return self._error_response(ScriptedError(400, "model is required"))
        item = await self._script(body)
        # Ollama streams unless told not to.
        streaming = body.get("stream", True)
        if isinstance(item, ScriptedError) and (item.after_text is None or not streaming):
            return self._error_response(item)
        top = int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
        if not streaming:
            assert isinstance(item, ScriptedReply)
            message: dict[str, Any] = {"role": "assistant", "content": item.content}
            if item.tool_calls:
                message["tool_calls"] = _ollama_tool_calls(item)
            answer = _ollama_chunk(body, item, message) | _ollama_done(body, item)
            if top is not None:
                answer["logprobs"] = [_logprob_entry(item, i, top) for i in range(len(item.tokens))]
            return web.json_response(answer)
        reply = item if isinstance(item, ScriptedReply) else ScriptedReply(item.after_text or "")
        writer = _StreamWriter(
            await self._open_stream(request, "application/x-ndjson"), reply.chunk_delay
        )
        for index, token in enumerate(reply.tokens):
            await writer.pause_before_token(index)
            chunk = _ollama_chunk(body, reply, {"role": "assistant", "content": token})
            if top is not None:
                chunk["logprobs"] = [_logprob_entry(reply, index, top)]
            await writer.ndjson(chunk)
        if isinstance(item, ScriptedError):
            await writer.ndjson({"error": item.message})
            return await writer.end()
        if reply.tool_calls:
            message = {"role": "assistant", "content": "", "tool_calls": _ollama_tool_calls(reply)}
            await writer.ndjson(_ollama_chunk(body, reply, message))
        done = _ollama_chunk(body, reply, {"role": "assistant", "content": ""})
        await writer.ndjson(done | _ollama_done(body, reply))
        return await writer.end()

    async def _embed(self, request: web.Request) -> web.Response:
        body = request[_BODY]
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not body.get("model") or not isinstance(texts, list):
            return self._error_response(ScriptedError(400, "invalid input type"))
        dimensions = int(body.get("dimensions") or EMBEDDING_DIMENSIONS)
        return web.json_response(
            {
                "model": body["model"],
                "embeddings": [embedding(text, dimensions) for text in texts],
                "total_duration": 14_143_917,
                "load_duration": 1_019_500,
                "prompt_eval_count": sum(len(text.split()) for text in texts),
            }
        )


def _ollama_chunk(
    body: dict[str, Any], reply: ScriptedReply, message: dict[str, Any]
) -> dict[str, Any]:
    return {
        "model": reply.model or body["model"],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
        "message": message,
        "done": False,
    }


def _ollama_done(body: dict[str, Any], reply: ScriptedReply) -> dict[str, Any]:
    return {
        "done": True,
        "done_reason": "length" if reply.finish == "length" else "stop",
        "total_duration": 4_883_583_458,
        "load_duration": 1_334_875,
        # Ollama counts only the prompt tokens it had to evaluate, not those reused from its cache.
        "prompt_eval_count": max(reply.prompt_size(body) - reply.cached_tokens, 0),
        "prompt_eval_duration": 342_546_000,
        "eval_count": reply.output_size,
        "eval_duration": 4_535_599_000,
    }


def _ollama_tool_calls(reply: ScriptedReply) -> list[dict[str, Any]]:
    # Ollama gives no call ids; arguments come as objects, not JSON text.
    return [
        {"function": {"index": index, "name": name, "arguments": dict(arguments)}}
        for index, (name, arguments) in enumerate(reply.tool_calls)
    ]


# --------------------------------------------------------------------------- shared


def _logprob_entry(reply: ScriptedReply, index: int, top: int) -> dict[str, Any]:
    """Return token `index`'s logprob in the shape OpenAI, Ollama and llama.cpp share."""
    token = reply.tokens[index]
    logprob = reply.logprob(index)
    alternatives = [(token, logprob), (RUNNER_UP_TOKEN, logprob - reply.top2_gap)]
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": text, "logprob": value, "bytes": list(text.encode())}
            for text, value in alternatives[:top]
        ],
    }


def _retry_after_header(error: ScriptedError) -> dict[str, str]:
    if error.retry_after is None:
        return {}
    return {"Retry-After": f"{error.retry_after:g}"}


def _pieces(text: str, size: int = 8) -> list[str]:
    """Split `text` the way streamed arguments arrive: in a few arbitrary pieces."""
    return [text[start : start + size] for start in range(0, len(text), size)] or [""]


def _strings(value: Any) -> list[str]:
    """Return the texts of a request's prompt: its messages, system text, input, instructions."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        if "messages" in value or "model" in value:
            fields = ("messages", "system", "input", "instructions")
            return [text for key in fields for text in _strings(value.get(key))]
        return [text for key in ("content", "text", "output") for text in _strings(value.get(key))]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []
