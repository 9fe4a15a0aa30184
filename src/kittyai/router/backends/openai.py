"""OpenAI's Chat Completions (also llama.cpp, vLLM, LM Studio, Perplexity) and Responses APIs."""

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from kittyai.contract.routing import TokenUsage
from kittyai.router.backends._wire import (
    MID_STREAM_ERROR_STATUS,
    HttpBackend,
    error_message,
    images_of,
    text_of,
    token_logprobs,
)
from kittyai.router.backends.base import (
    BackendReply,
    ChatRequest,
    Message,
    TokenLogprob,
    ToolCall,
)
from kittyai.router.options import BackendKind

CHAT_PATH = "/chat/completions"
RESPONSES_PATH = "/responses"
EMBEDDINGS_PATH = "/embeddings"
TOP_LOGPROBS = 2
STREAM_END = "[DONE]"
# Statuses for errors a Responses stream reports after it began with 200.
_RESPONSES_ERROR_STATUS = {"rate_limit_exceeded": 429, "invalid_prompt": 400}


class _OpenAIBackend(HttpBackend):
    """What both OpenAI APIs share: bearer authentication and embeddings."""

    def _headers(self) -> dict[str, str]:
        key = self._api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Return one embedding per text from `/embeddings`."""
        answer = await self._post(
            EMBEDDINGS_PATH,
            {"model": self.options.model, "input": texts, "encoding_format": "float"},
        )
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != len(texts):
            raise self._error("the answer has no embedding for every text")
        return [item["embedding"] for item in sorted(data, key=lambda item: item["index"])]


class OpenAIChatBackend(_OpenAIBackend):
    """A model behind OpenAI's Chat Completions API, OpenAI's own or a compatible server."""

    @property
    def _search(self) -> bool:
        return self.options.kind is BackendKind.PERPLEXITY

    async def complete(self, request: ChatRequest) -> BackendReply:
        """Send `request` and return the whole answer."""
        answer = await self._post(CHAT_PATH, self._body(request, stream=False))
        if not isinstance(answer, dict) or not answer.get("choices"):
            raise self._error("malformed answer: no choices")
        choice = answer["choices"][0]
        message = choice.get("message") or {}
        logprobs = _choice_logprobs(choice)
        return BackendReply(
            content=message.get("content") or "",
            tool_calls=tuple(
                ToolCall(
                    call.get("id") or f"call_{index}",
                    call["function"]["name"],
                    call["function"].get("arguments") or "{}",
                )
                for index, call in enumerate(message.get("tool_calls") or ())
            ),
            finish_reason=choice.get("finish_reason") or "stop",
            model=answer.get("model") or self.options.model,
            usage=_chat_usage(answer.get("usage")),
            logprobs=tuple(logprobs) if logprobs is not None else None,
            citations=_citations(answer),
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | BackendReply]:
        """Send `request`, yield text deltas as they arrive, then the whole answer."""
        content: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        logprobs: list[TokenLogprob] | None = None
        finish_reason: str | None = None
        model = self.options.model
        usage = TokenUsage()
        citations: tuple[str, ...] = ()
        finished = False
        async with aclosing(
            self._post_events(CHAT_PATH, self._body(request, stream=True))
        ) as events:
            async for data in events:
                if data == STREAM_END:
                    finished = True
                    break
                chunk = self._decode(data)
                if "error" in chunk:
                    raise self._mid_stream_error(chunk)
                model = chunk.get("model") or model
                if chunk.get("usage"):
                    usage = _chat_usage(chunk["usage"])
                citations = _citations(chunk) or citations
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if text := delta.get("content"):
                        content.append(text)
                        yield text
                    for call in delta.get("tool_calls") or ():
                        _add_call_delta(calls, call)
                    if (tokens := _choice_logprobs(choice)) is not None:
                        logprobs = [*(logprobs or ()), *tokens]
                    finish_reason = choice.get("finish_reason") or finish_reason
        # Some servers close the stream without [DONE]; a finish reason still marks an end.
        if not finished and finish_reason is None:
            raise self._error("the stream ended before the answer did")
        yield BackendReply(
            content="".join(content),
            tool_calls=tuple(
                ToolCall(call["id"] or f"call_{index}", call["name"], "".join(call["arguments"]))
                for index, call in sorted(calls.items())
            ),
            finish_reason=finish_reason or "stop",
            model=model,
            usage=usage,
            logprobs=tuple(logprobs) if logprobs is not None else None,
            citations=citations,
        )

    def _body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.options.model,
            "messages": _alternating(request.messages)
            if self._search
            else _without_nulls(request.messages),
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if request.max_tokens is not None:
            # OpenAI's reasoning models refuse `max_tokens`; local servers may not know the other.
            key = (
                "max_completion_tokens" if self.options.kind is BackendKind.OPENAI else "max_tokens"
            )
            body[key] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        # The search model answers from the web: it takes neither tools nor logprobs.
        if request.tools and not self._search:
            body["tools"] = request.tools
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
        if request.logprobs and not self._search:
            body["logprobs"] = True
            body["top_logprobs"] = TOP_LOGPROBS
        if request.response_format is not None:
            body["response_format"] = request.response_format
        return body

    def _mid_stream_error(self, chunk: dict[str, Any]) -> Exception:
        error = chunk["error"]
        # llama.cpp puts an HTTP status in `code`; OpenAI puts a name there.
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) else MID_STREAM_ERROR_STATUS
        return self._error(error_message(chunk) or "the stream failed", status=status)


class OpenAIResponsesBackend(_OpenAIBackend):
    """A model behind OpenAI's Responses API."""

    async def complete(self, request: ChatRequest) -> BackendReply:
        """Send `request` and return the whole answer."""
        answer = await self._post(RESPONSES_PATH, self._body(request, stream=False))
        if not isinstance(answer, dict) or not isinstance(answer.get("output"), list):
            raise self._error("malformed answer: no output")
        if answer.get("status") == "failed":
            raise self._failure(answer.get("error"))
        content: list[str] = []
        logprobs: list[TokenLogprob] | None = None
        tool_calls: list[ToolCall] = []
        for item in answer["output"]:
            if item.get("type") == "function_call":
                tool_calls.append(_function_call(item))
            elif item.get("type") == "message":
                for part in item.get("content") or ():
                    if part.get("type") != "output_text":
                        continue
                    content.append(part.get("text") or "")
                    if part.get("logprobs"):
                        logprobs = [*(logprobs or ()), *token_logprobs(part["logprobs"])]
        return self._reply(answer, "".join(content), tool_calls, logprobs)

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | BackendReply]:
        """Send `request`, yield text deltas as they arrive, then the whole answer."""
        content: list[str] = []
        logprobs: list[TokenLogprob] | None = None
        tool_calls: list[ToolCall] = []
        body = self._body(request, stream=True)
        async with aclosing(self._post_events(RESPONSES_PATH, body)) as events:
            async for data in events:
                payload = self._decode(data)
                match payload.get("type"):
                    case "response.output_text.delta":
                        if delta := payload.get("delta"):
                            content.append(delta)
                            yield delta
                        if payload.get("logprobs"):
                            logprobs = [*(logprobs or ()), *token_logprobs(payload["logprobs"])]
                    case "response.output_item.done":
                        if payload["item"].get("type") == "function_call":
                            tool_calls.append(_function_call(payload["item"]))
                    case "response.completed" | "response.incomplete":
                        yield self._reply(
                            payload["response"], "".join(content), tool_calls, logprobs
                        )
                        return
                    case "response.failed":
                        raise self._failure(payload["response"].get("error"))
                    case "error":
                        raise self._failure(payload)
        raise self._error("the stream ended before the answer did")

    def _body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        instructions, items = _responses_input(request.messages)
        body: dict[str, Any] = {
            "model": self.options.model,
            "input": items,
            "stream": stream,
            # Every turn carries the whole conversation: nothing needs keeping at OpenAI.
            "store": False,
        }
        if instructions:
            body["instructions"] = instructions
        tools = [
            _responses_tool(tool) for tool in request.tools or () if tool.get("type") == "function"
        ]
        if tools:
            body["tools"] = tools
            if request.tool_choice is not None:
                body["tool_choice"] = _responses_tool_choice(request.tool_choice)
        if request.max_tokens is not None:
            body["max_output_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.logprobs:
            body["top_logprobs"] = TOP_LOGPROBS
            body["include"] = ["message.output_text.logprobs"]
        if request.response_format is not None:
            body["text"] = {"format": _responses_text_format(request.response_format)}
        return body

    def _reply(
        self,
        response: dict[str, Any],
        content: str,
        tool_calls: list[ToolCall],
        logprobs: list[TokenLogprob] | None,
    ) -> BackendReply:
        if response.get("status") == "incomplete":
            reason = (response.get("incomplete_details") or {}).get("reason")
            finish_reason = "content_filter" if reason == "content_filter" else "length"
        else:
            finish_reason = "tool_calls" if tool_calls else "stop"
        usage = response.get("usage") or {}
        input_details = usage.get("input_tokens_details") or {}
        cached = input_details.get("cached_tokens") or 0
        written = input_details.get("cache_write_tokens") or 0
        return BackendReply(
            content=content,
            tool_calls=tuple(tool_calls),
            finish_reason=finish_reason,
            model=response.get("model") or self.options.model,
            usage=TokenUsage(
                input=max((usage.get("input_tokens") or 0) - cached - written, 0),
                cache_read=cached,
                cache_write=written,
                output=usage.get("output_tokens") or 0,
                reasoning=(usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
            ),
            logprobs=tuple(logprobs) if logprobs is not None else None,
        )

    def _failure(self, error: Any) -> Exception:
        error = error if isinstance(error, dict) else {}
        status = _RESPONSES_ERROR_STATUS.get(error.get("code") or "", MID_STREAM_ERROR_STATUS)
        return self._error(error.get("message") or "the response failed", status=status)


def _add_call_delta(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    """Fold one streamed piece of a tool call into the call it belongs to, by `index`."""
    call = calls.setdefault(delta.get("index", len(calls)), {"id": "", "name": "", "arguments": []})
    function = delta.get("function") or {}
    call["id"] = delta.get("id") or call["id"]
    # The name comes whole; some servers repeat it in every piece.
    call["name"] = function.get("name") or call["name"]
    if arguments := function.get("arguments"):
        call["arguments"].append(arguments)


def _choice_logprobs(choice: dict[str, Any]) -> list[TokenLogprob] | None:
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or logprobs.get("content") is None:
        return None
    return token_logprobs(logprobs["content"])


def _chat_usage(usage: dict[str, Any] | None) -> TokenUsage:
    """Normalise Chat Completions usage; `prompt_tokens` counts cached and cache-written tokens."""
    if not usage:
        return TokenUsage()
    prompt_details = usage.get("prompt_tokens_details") or {}
    cached = prompt_details.get("cached_tokens") or 0
    written = prompt_details.get("cache_write_tokens") or 0
    return TokenUsage(
        input=max((usage.get("prompt_tokens") or 0) - cached - written, 0),
        cache_read=cached,
        cache_write=written,
        output=usage.get("completion_tokens") or 0,
        reasoning=(usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


def _citations(answer: dict[str, Any]) -> tuple[str, ...]:
    """Return a search-grounded answer's sources: Perplexity's `citations`, or `search_results`."""
    if citations := answer.get("citations"):
        return tuple(str(url) for url in citations)
    return tuple(
        str(result["url"]) for result in answer.get("search_results") or () if result.get("url")
    )


def _without_nulls(messages: list[Message]) -> list[Message]:
    """Drop null fields: llama.cpp's server rejects an assistant tool call's `content: null`."""
    return [
        {key: value for key, value in message.items() if value is not None} for message in messages
    ]


def _alternating(messages: list[Message]) -> list[Message]:
    """Fit a conversation to Perplexity, which wants system text, then user and assistant in turn.

    Tool calls and their results are dropped, since the search model takes no tools, and
    consecutive messages of one role are joined.
    """
    system = [text_of(m.get("content")) for m in messages if m["role"] in {"system", "developer"}]
    turns: list[Message] = []
    for message in messages:
        if message["role"] not in {"user", "assistant"}:
            continue
        if not (text := text_of(message.get("content"))):
            continue
        if turns and turns[-1]["role"] == message["role"]:
            turns[-1] = {"role": message["role"], "content": f"{turns[-1]['content']}\n\n{text}"}
        else:
            turns.append({"role": message["role"], "content": text})
    head = [{"role": "system", "content": "\n\n".join(system)}] if system else []
    return head + turns


def _responses_input(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """Split OpenAI chat messages into Responses `instructions` and `input` items."""
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        text = text_of(message.get("content"))
        if role in {"system", "developer"}:
            instructions.append(text)
        elif role == "tool":
            items.append(
                {"type": "function_call_output", "call_id": message["tool_call_id"], "output": text}
            )
        else:
            images = images_of(message.get("content"))
            if images and role == "user":
                parts = [{"type": "input_text", "text": text}] if text else []
                parts += [
                    {
                        "type": "input_image",
                        "image_url": image.url or f"data:{image.media_type};base64,{image.data}",
                    }
                    for image in images
                ]
                items.append({"role": role, "content": parts})
            elif text or role == "user":
                items.append({"role": role, "content": text})
            items.extend(
                {
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": call["function"]["name"],
                    "arguments": call["function"].get("arguments") or "{}",
                }
                for call in message.get("tool_calls") or ()
            )
    return "\n\n".join(instructions), items


def _responses_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    flat = {
        "type": "function",
        "name": function["name"],
        "parameters": function.get("parameters") or {"type": "object", "properties": {}},
        # Responses makes tools strict unless told otherwise, and strict schemas must list
        # every property as required: most tools' schemas are not written that way.
        "strict": function.get("strict", False),
    }
    if description := function.get("description"):
        flat["description"] = description
    return flat


def _responses_tool_choice(tool_choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(tool_choice, dict) and "function" in tool_choice:
        return {"type": "function", "name": tool_choice["function"]["name"]}
    return tool_choice


def _responses_text_format(response_format: dict[str, Any]) -> dict[str, Any]:
    if response_format.get("type") == "json_schema":
        return {"type": "json_schema", **response_format.get("json_schema", {})}
    return response_format


def _function_call(item: dict[str, Any]) -> ToolCall:
    return ToolCall(item["call_id"], item["name"], item.get("arguments") or "{}")
