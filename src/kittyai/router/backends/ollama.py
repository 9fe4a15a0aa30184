"""Ollama's native API: `/api/chat` streaming NDJSON, and `/api/embed`.

The native API rather than Ollama's OpenAI-compatible one, because only the native one
takes `keep_alive` and `num_ctx` and returns token logprobs.
"""

from collections.abc import AsyncIterator
from contextlib import aclosing
import json
from typing import Any

from kittyai.contract.routing import TokenUsage
from kittyai.router.backends._wire import (
    MID_STREAM_ERROR_STATUS,
    HttpBackend,
    arguments_of,
    images_of,
    text_of,
    token_logprobs,
)
from kittyai.router.backends.base import BackendReply, ChatRequest, Message, ToolCall

CHAT_PATH = "/api/chat"
EMBED_PATH = "/api/embed"
TOP_LOGPROBS = 2


class OllamaBackend(HttpBackend):
    """A model served by Ollama."""

    def _headers(self) -> dict[str, str]:
        # Ollama on the LAN takes no key; ollama.com and authenticating proxies want a bearer.
        key = self._api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def complete(self, request: ChatRequest) -> BackendReply:
        """Send `request` and return the whole answer."""
        answer = await self._post(CHAT_PATH, self._chat_body(request, stream=False))
        return self._reply(answer)

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | BackendReply]:
        """Send `request`, yield text deltas as Ollama generates them, then the whole answer."""
        content: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        logprobs: list[dict[str, Any]] | None = None
        async with aclosing(
            self._post_lines(CHAT_PATH, self._chat_body(request, stream=True))
        ) as lines:
            async for line in lines:
                if not line.strip():
                    continue
                chunk = self._decode(line)
                if "error" in chunk:
                    raise self._error(str(chunk["error"]), status=MID_STREAM_ERROR_STATUS)
                message = chunk.get("message") or {}
                if text := message.get("content"):
                    content.append(text)
                    yield text
                tool_calls.extend(message.get("tool_calls") or ())
                if chunk.get("logprobs") is not None:
                    logprobs = [*(logprobs or ()), *chunk["logprobs"]]
                if chunk.get("done"):
                    message = {"content": "".join(content), "tool_calls": tool_calls}
                    yield self._reply(chunk | {"message": message, "logprobs": logprobs})
                    return
        raise self._error("the stream ended before its last chunk")

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Return one embedding per text from `/api/embed`."""
        body: dict[str, Any] = {"model": self.options.model, "input": texts}
        if self.options.keep_alive is not None:
            body["keep_alive"] = self.options.keep_alive
        answer = await self._post(EMBED_PATH, body)
        embeddings = answer.get("embeddings") if isinstance(answer, dict) else None
        if not isinstance(embeddings, list) or len(embeddings) != len(texts):
            raise self._error("the answer has no embedding for every text")
        return embeddings

    def _chat_body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.options.model,
            "messages": _messages(request.messages),
            "stream": stream,
        }
        # Ollama has no tool_choice; "none" is honoured by not offering the tools.
        if request.tools and request.tool_choice != "none":
            body["tools"] = request.tools
        if self.options.keep_alive is not None:
            body["keep_alive"] = self.options.keep_alive
        options: dict[str, Any] = {}
        if self.options.num_ctx is not None:
            options["num_ctx"] = self.options.num_ctx
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if options:
            body["options"] = options
        if request.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = TOP_LOGPROBS
        if (answer_format := _format(request.response_format)) is not None:
            body["format"] = answer_format
        return body

    def _reply(self, answer: Any) -> BackendReply:
        if not isinstance(answer, dict) or not isinstance(answer.get("message"), dict):
            raise self._error("malformed answer: no message")
        message = answer["message"]
        tool_calls = tuple(
            ToolCall(
                call.get("id") or f"call_{index}",
                call["function"]["name"],
                json.dumps(call["function"].get("arguments") or {}),
            )
            for index, call in enumerate(message.get("tool_calls") or ())
        )
        if answer.get("done_reason") == "length":
            finish_reason = "length"
        else:
            # Ollama says "stop" after a tool call too.
            finish_reason = "tool_calls" if tool_calls else "stop"
        logprobs = answer.get("logprobs")
        return BackendReply(
            content=message.get("content") or "",
            tool_calls=tool_calls,
            finish_reason=finish_reason,
            model=answer.get("model") or self.options.model,
            usage=TokenUsage(
                input=answer.get("prompt_eval_count") or 0, output=answer.get("eval_count") or 0
            ),
            logprobs=tuple(token_logprobs(logprobs)) if logprobs is not None else None,
        )


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Translate OpenAI messages: arguments as objects, tool results named by their tool."""
    tool_names: dict[str, str] = {}
    translated = []
    for message in messages:
        role = "system" if message["role"] == "developer" else message["role"]
        ollama_message: dict[str, Any] = {"role": role, "content": text_of(message.get("content"))}
        # Ollama takes images as base64 beside the text; it cannot fetch a URL.
        if images := [image.data for image in images_of(message.get("content")) if image.data]:
            ollama_message["images"] = images
        if calls := message.get("tool_calls"):
            ollama_message["tool_calls"] = [
                {
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": arguments_of(call["function"].get("arguments")),
                    }
                }
                for call in calls
            ]
            tool_names |= {call["id"]: call["function"]["name"] for call in calls}
        if role == "tool" and (
            name := tool_names.get(message.get("tool_call_id", "")) or message.get("name")
        ):
            ollama_message["tool_name"] = name
        translated.append(ollama_message)
    return translated


def _format(response_format: dict[str, Any] | None) -> str | dict[str, Any] | None:
    """Translate OpenAI's `response_format` to Ollama's `format`: a JSON schema or "json"."""
    if not response_format:
        return None
    if response_format.get("type") == "json_schema":
        return response_format.get("json_schema", {}).get("schema") or "json"
    if response_format.get("type") == "json_object":
        return "json"
    return None
