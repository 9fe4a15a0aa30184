"""Anthropic's Messages API."""

from collections.abc import AsyncIterator
from contextlib import aclosing
import json
from typing import Any

from kittyai.contract.routing import TokenUsage
from kittyai.router.backends._wire import (
    MID_STREAM_ERROR_STATUS,
    HttpBackend,
    Image,
    arguments_of,
    images_of,
    text_of,
)
from kittyai.router.backends.base import BackendError, BackendReply, ChatRequest, Message, ToolCall

MESSAGES_PATH = "/v1/messages"
API_VERSION = "2023-06-01"
# Anthropic requires `max_tokens`; this is the cap when the caller set none.
DEFAULT_MAX_TOKENS = 1024
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}
# The HTTP status each error type has, for errors reported inside a stream.
ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# Ways `tool_choice` is written in Chat Completions and in Messages.
TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


class AnthropicBackend(HttpBackend):
    """A Claude model behind Anthropic's Messages API."""

    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if key := self._api_key:
            headers["x-api-key"] = key
        return headers

    async def complete(self, request: ChatRequest) -> BackendReply:
        """Send `request` and return the whole answer."""
        answer = await self._post(MESSAGES_PATH, self._body(request, stream=False))
        if not isinstance(answer, dict) or not isinstance(answer.get("content"), list):
            raise self._error("malformed answer: no content")
        content = [
            block.get("text") or "" for block in answer["content"] if block["type"] == "text"
        ]
        tool_calls = [
            ToolCall(block["id"], block["name"], json.dumps(block.get("input") or {}))
            for block in answer["content"]
            if block["type"] == "tool_use"
        ]
        return self._reply(answer, "".join(content), tool_calls, answer.get("usage") or {})

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | BackendReply]:
        """Send `request`, yield text deltas as they arrive, then the whole answer."""
        message: dict[str, Any] = {}
        usage: dict[str, Any] = {}
        content: list[str] = []
        # Tool-use blocks by index, their input JSON arriving in pieces.
        tools: dict[int, dict[str, Any]] = {}
        body = self._body(request, stream=True)
        async with aclosing(self._post_events(MESSAGES_PATH, body)) as events:
            async for data in events:
                payload = self._decode(data)
                match payload.get("type"):
                    case "message_start":
                        message = payload["message"]
                        usage |= message.get("usage") or {}
                    case "content_block_start" if payload["content_block"]["type"] == "tool_use":
                        block = payload["content_block"]
                        tools[payload["index"]] = {
                            "id": block["id"],
                            "name": block["name"],
                            "json": [],
                        }
                    case "content_block_delta":
                        delta = payload["delta"]
                        if delta["type"] == "text_delta" and delta.get("text"):
                            content.append(delta["text"])
                            yield delta["text"]
                        elif delta["type"] == "input_json_delta" and payload["index"] in tools:
                            tools[payload["index"]]["json"].append(delta.get("partial_json") or "")
                    case "message_delta":
                        message |= payload.get("delta") or {}
                        # Counts here are cumulative; newer servers repeat the input ones.
                        usage |= {
                            k: v for k, v in (payload.get("usage") or {}).items() if v is not None
                        }
                    case "message_stop":
                        tool_calls = [
                            ToolCall(tool["id"], tool["name"], "".join(tool["json"]) or "{}")
                            for _, tool in sorted(tools.items())
                        ]
                        yield self._reply(message, "".join(content), tool_calls, usage)
                        return
                    case "error":
                        error = payload.get("error") or {}
                        raise self._error(
                            error.get("message") or "the stream failed",
                            status=ERROR_STATUSES.get(
                                str(error.get("type")), MID_STREAM_ERROR_STATUS
                            ),
                        )
        raise self._error("the stream ended before the answer did")

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Raise: Anthropic has no embeddings API."""
        # As if the endpoint had been called: it is not there, and asking again will not help.
        raise BackendError(self.options.name, "Anthropic has no embeddings API", status=404)

    def _body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        system, messages = _messages(request.messages)
        # No `temperature`: current SDKs dropped it, newer models reject it.
        body: dict[str, Any] = {
            "model": self.options.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": messages,
            "stream": stream,
        }
        if system:
            body["system"] = system
        if request.tools:
            body["tools"] = [
                _tool(tool) for tool in request.tools if tool.get("type") == "function"
            ]
            if request.tool_choice is not None:
                body["tool_choice"] = _tool_choice(request.tool_choice)
        return body

    def _reply(
        self,
        message: dict[str, Any],
        content: str,
        tool_calls: list[ToolCall],
        usage: dict[str, Any],
    ) -> BackendReply:
        stop_reason = message.get("stop_reason")
        return BackendReply(
            content=content,
            tool_calls=tuple(tool_calls),
            finish_reason=FINISH_REASONS.get(stop_reason, "stop") if stop_reason else "stop",
            model=message.get("model") or self.options.model,
            # Anthropic's `input_tokens` already leaves out cache reads and writes.
            usage=TokenUsage(
                input=usage.get("input_tokens") or 0,
                cache_read=usage.get("cache_read_input_tokens") or 0,
                cache_write=usage.get("cache_creation_input_tokens") or 0,
                output=usage.get("output_tokens") or 0,
            ),
        )


def _messages(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """Translate OpenAI messages to a system text and Anthropic's content-block messages.

    Tool results become `tool_result` blocks of a user message, and consecutive
    messages of one role merge into one, as Anthropic wants roles to alternate.
    """
    system: list[str] = []
    translated: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        text = text_of(message.get("content"))
        if role in {"system", "developer"}:
            system.append(text)
            continue
        blocks = [_image_block(image) for image in images_of(message.get("content"))]
        # Anthropic refuses empty text blocks.
        if text:
            blocks.append({"type": "text", "text": text})
        if role == "tool":
            role = "user"
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message["tool_call_id"]}
            if text:
                result["content"] = text
            blocks = [result]
        blocks.extend(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": call["function"]["name"],
                "input": arguments_of(call["function"].get("arguments")),
            }
            for call in message.get("tool_calls") or ()
        )
        if not blocks:
            continue
        if translated and translated[-1]["role"] == role:
            translated[-1]["content"].extend(blocks)
        else:
            translated.append({"role": role, "content": blocks})
    return "\n\n".join(system), translated


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    translated = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if description := function.get("description"):
        translated["description"] = description
    return translated


def _tool_choice(tool_choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(tool_choice, dict):
        return {"type": "tool", "name": tool_choice["function"]["name"]}
    return TOOL_CHOICES.get(tool_choice, {"type": "auto"})


def _image_block(image: Image) -> dict[str, Any]:
    """Return an image as an Anthropic `image` block: base64 data, or a URL it fetches."""
    if image.data is not None:
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": image.media_type, "data": image.data},
        }
    return {"type": "image", "source": {"type": "url", "url": image.url}}
