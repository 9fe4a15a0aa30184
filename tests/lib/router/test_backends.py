"""The backend adapters against protocol-faithful fakes of each vendor's server."""

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
import json
import time
from typing import Any

import aiohttp
from multidict import CIMultiDict
import pytest

from kittyai.contract.routing import TokenUsage
from kittyai.router.backends import create_backend
from kittyai.router.backends._wire import retry_after_seconds
from kittyai.router.backends.base import (
    Backend,
    BackendError,
    BackendReply,
    ChatRequest,
    TokenLogprob,
)
from kittyai.router.options import BackendOptions
from tests.helpers.fake_llm import (
    FakeAnthropic,
    FakeLLMServer,
    FakeOllama,
    FakeOpenAI,
    ScriptedError,
    ScriptedReply,
    embedding,
)
from tests.helpers.net import free_port

OPENAI_KEY = "sk-test-openai-4f9a2c"
ANTHROPIC_KEY = "sk-ant-test-7d31e0"
PERPLEXITY_KEY = "pplx-test-b81c55"
ANSWER = "The workshop lights are on."
ANSWER_TOKENS = ["The", " workshop", " lights", " are", " on."]
QUESTION = ChatRequest(messages=[{"role": "user", "content": "Are the workshop lights on?"}])
LIGHTS_TOOL = {
    "type": "function",
    "function": {
        "name": "HassTurnOn",
        "description": "Turns on a device or entity",
        "parameters": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
        },
    },
}
# A turn after the model called a tool and Home Assistant answered it.
TOOL_ROUND_TRIP = [
    {"role": "system", "content": "You control the workshop."},
    {"role": "user", "content": "Turn on the workshop lights"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_lights1",
                "type": "function",
                "function": {"name": "HassTurnOn", "arguments": '{"name": "workshop lights"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_lights1", "content": '{"success": true}'},
]

# name: (kind, api, key the fake wants)
VENDORS: dict[str, tuple[str, str, str | None]] = {
    "ollama": ("ollama", "chat_completions", None),
    "openai": ("openai", "chat_completions", OPENAI_KEY),
    "responses": ("openai", "responses", OPENAI_KEY),
    "llamacpp": ("openai_compatible", "chat_completions", None),
    "anthropic": ("anthropic", "chat_completions", ANTHROPIC_KEY),
    "perplexity": ("perplexity", "chat_completions", PERPLEXITY_KEY),
}
WITH_KEYS = [name for name, (_, _, key) in VENDORS.items() if key]
# The search model takes no tools.
WITH_TOOLS = [name for name in VENDORS if name != "perplexity"]
WITH_LOGPROBS = ["ollama", "openai", "responses", "llamacpp"]
STREAM_OR_NOT = pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])


@dataclass(slots=True)
class Vendor:
    """A fake server and an adapter pointed at it."""

    name: str
    fake: FakeLLMServer
    backend: Backend
    key: str | None


def make_fake(name: str) -> AbstractAsyncContextManager[FakeLLMServer]:
    key = VENDORS[name][2]
    if name == "ollama":
        return FakeOllama()
    if name == "anthropic":
        return FakeAnthropic(api_key=key)
    return FakeOpenAI(api_key=key, perplexity=name == "perplexity")


def make_backend(name: str, url: str, session: aiohttp.ClientSession, **options: Any) -> Backend:
    kind, api, key = VENDORS[name]
    settings: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "api": api,
        "url": url,
        "model": f"{name}-model",
        "api_key": key,
        "timeout": 5.0,
    }
    return create_backend(BackendOptions.model_validate(settings | options), session)


@pytest.fixture
async def vendor(
    request: pytest.FixtureRequest, session: aiohttp.ClientSession
) -> AsyncIterator[Vendor]:
    """The fake and adapter of the vendor the test is parametrized with."""
    name = request.param
    async with make_fake(name) as fake:
        backend = make_backend(name, fake.url, session)
        yield Vendor(name, fake, backend, VENDORS[name][2])


def vendors(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("vendor", names or list(VENDORS), indirect=True)


async def ask(backend: Backend, request: ChatRequest, *, streaming: bool) -> BackendReply:
    """Return the whole reply, by `complete` or by draining `stream`."""
    if not streaming:
        return await backend.complete(request)
    items = [item async for item in backend.stream(request)]
    reply = items[-1]
    assert isinstance(reply, BackendReply)
    assert "".join(item for item in items[:-1] if isinstance(item, str)) == reply.content
    return reply


async def drain(
    stream: AsyncIterator[str | BackendReply], *, into: list[str | BackendReply]
) -> None:
    """Collect a stream's items into `into`, keeping those that came before a failure."""
    async for item in stream:
        into.append(item)


def body(fake: FakeLLMServer) -> dict[str, Any]:
    """Return the body of the one request `fake` received."""
    assert len(fake.requests) == 1
    return fake.requests[0].body


# --------------------------------------------------------------------------- answers


@vendors()
@STREAM_OR_NOT
async def test_answer_is_normalised(vendor: Vendor, streaming: bool) -> None:
    """Every vendor's answer comes back as the same reply: text, model, finish, usage."""
    vendor.fake.enqueue(ScriptedReply(ANSWER, prompt_tokens=42))

    reply = await ask(vendor.backend, QUESTION, streaming=streaming)

    assert reply.content == ANSWER
    assert reply.model == f"{vendor.name}-model"
    assert reply.finish_reason == "stop"
    assert reply.tool_calls == ()
    assert reply.usage == TokenUsage(input=42, output=5)
    assert reply.logprobs is None
    assert body(vendor.fake)["stream"] is streaming


@vendors()
async def test_stream_yields_text_as_it_is_generated(vendor: Vendor) -> None:
    """The first words reach the caller while the server is still generating the rest."""
    vendor.fake.enqueue(ScriptedReply(ANSWER, chunk_delay=0.05))
    arrivals: list[tuple[float, str | BackendReply]] = []

    async for item in vendor.backend.stream(QUESTION):
        arrivals.append((time.monotonic(), item))

    deltas = [item for _, item in arrivals[:-1]]
    assert deltas == ANSWER_TOKENS
    first_delta_at, (last_at, reply) = arrivals[0][0], arrivals[-1]
    assert isinstance(reply, BackendReply)
    assert reply.content == ANSWER
    # Four pauses of 50 ms separate the first word from the end.
    assert last_at - first_delta_at > 0.15


@vendors()
@STREAM_OR_NOT
async def test_truncated_answer_reports_length(vendor: Vendor, streaming: bool) -> None:
    vendor.fake.enqueue(ScriptedReply("The lights", finish_reason="length"))

    reply = await ask(vendor.backend, QUESTION, streaming=streaming)

    assert (reply.content, reply.finish_reason) == ("The lights", "length")


@vendors(*WITH_TOOLS)
@STREAM_OR_NOT
async def test_tool_call_is_returned_with_json_arguments(vendor: Vendor, streaming: bool) -> None:
    vendor.fake.enqueue(
        ScriptedReply(tool_calls=[("HassTurnOn", {"name": "workshop lights", "brightness": 80})])
    )
    request = ChatRequest(messages=QUESTION.messages, tools=[LIGHTS_TOOL])

    reply = await ask(vendor.backend, request, streaming=streaming)

    assert reply.finish_reason == "tool_calls"
    [call] = reply.tool_calls
    assert call.name == "HassTurnOn"
    assert json.loads(call.arguments) == {"name": "workshop lights", "brightness": 80}
    assert call.id


@vendors("openai", "responses", "anthropic")
async def test_parallel_tool_calls_stream_apart(vendor: Vendor) -> None:
    """Two calls streamed piece by piece come back as two calls, each with its own arguments."""
    vendor.fake.enqueue(
        ScriptedReply(
            "On it.",
            tool_calls=[
                ("HassTurnOn", {"name": "workshop lights"}),
                ("HassTurnOff", {"name": "bench fan"}),
            ],
        )
    )
    request = ChatRequest(messages=QUESTION.messages, tools=[LIGHTS_TOOL])

    reply = await ask(vendor.backend, request, streaming=True)

    assert reply.content == "On it."
    assert [(call.name, json.loads(call.arguments)) for call in reply.tool_calls] == [
        ("HassTurnOn", {"name": "workshop lights"}),
        ("HassTurnOff", {"name": "bench fan"}),
    ]
    assert len({call.id for call in reply.tool_calls}) == 2


# --------------------------------------------------------------------------- translations


@vendors("ollama")
async def test_ollama_request_translation(vendor: Vendor) -> None:
    """Ollama gets arguments as objects, tool results named by tool, and its own options."""
    request = ChatRequest(
        messages=TOOL_ROUND_TRIP,
        tools=[LIGHTS_TOOL],
        max_tokens=256,
        temperature=0.2,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"a": 1}}},
    )

    await vendor.backend.complete(request)

    sent = body(vendor.fake)
    assert vendor.fake.paths() == ["/api/chat"]
    assert sent["model"] == "ollama-model"
    assert sent["messages"] == [
        {"role": "system", "content": "You control the workshop."},
        {"role": "user", "content": "Turn on the workshop lights"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "HassTurnOn", "arguments": {"name": "workshop lights"}}}
            ],
        },
        {"role": "tool", "content": '{"success": true}', "tool_name": "HassTurnOn"},
    ]
    assert sent["tools"] == [LIGHTS_TOOL]
    assert sent["keep_alive"] == "30m"
    assert sent["options"] == {"num_ctx": 8192, "temperature": 0.2, "num_predict": 256}
    assert sent["format"] == {"a": 1}
    assert "logprobs" not in sent


SNAPSHOT = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Is this print failing?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
            {"type": "image_url", "image_url": {"url": "https://cam.local/snapshot.jpg"}},
        ],
    }
]


@vendors("ollama")
async def test_ollama_gets_images_as_base64(vendor: Vendor) -> None:
    """Ollama takes a message's images as base64 beside its text; it cannot fetch a URL."""
    await vendor.backend.complete(ChatRequest(messages=SNAPSHOT))

    assert body(vendor.fake)["messages"] == [
        {"role": "user", "content": "Is this print failing?", "images": ["/9j/4AAQ"]}
    ]


@vendors("anthropic")
async def test_anthropic_gets_images_as_image_blocks(vendor: Vendor) -> None:
    """Anthropic gets base64 images with their media type, and URLs it fetches itself."""
    await vendor.backend.complete(ChatRequest(messages=SNAPSHOT))

    assert vendor.fake.requests[0].body["messages"] == [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"},
                },
                {
                    "type": "image",
                    "source": {"type": "url", "url": "https://cam.local/snapshot.jpg"},
                },
                {"type": "text", "text": "Is this print failing?"},
            ],
        }
    ]


@vendors("responses")
async def test_responses_get_images_as_input_images(vendor: Vendor) -> None:
    await vendor.backend.complete(ChatRequest(messages=SNAPSHOT))

    assert body(vendor.fake)["input"] == [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Is this print failing?"},
                {"type": "input_image", "image_url": "data:image/jpeg;base64,/9j/4AAQ"},
                {"type": "input_image", "image_url": "https://cam.local/snapshot.jpg"},
            ],
        }
    ]


@vendors("openai", "llamacpp")
async def test_chat_completions_request_translation(vendor: Vendor) -> None:
    request = ChatRequest(
        messages=TOOL_ROUND_TRIP,
        tools=[LIGHTS_TOOL],
        tool_choice="auto",
        max_tokens=256,
        temperature=0.2,
        response_format={"type": "json_object"},
    )

    await vendor.backend.complete(request)
    [*_, streamed] = [item async for item in vendor.backend.stream(request)]

    assert isinstance(streamed, BackendReply)
    whole, stream = (recorded.body for recorded in vendor.fake.requests)
    assert vendor.fake.paths() == ["/v1/chat/completions"] * 2
    # Null fields are left out: llama.cpp's server refuses a tool call's `content: null`.
    assert whole["messages"] == [
        {key: value for key, value in message.items() if value is not None}
        for message in TOOL_ROUND_TRIP
    ]
    assert whole["tools"] == [LIGHTS_TOOL]
    assert whole["tool_choice"] == "auto"
    assert whole["temperature"] == 0.2
    assert whole["response_format"] == {"type": "json_object"}
    # OpenAI's reasoning models refuse `max_tokens`; local servers know it best.
    max_key = "max_completion_tokens" if vendor.name == "openai" else "max_tokens"
    assert whole[max_key] == 256
    assert "stream_options" not in whole
    assert stream["stream_options"] == {"include_usage": True}
    headers = vendor.fake.requests[0].headers
    if vendor.key:
        assert headers["Authorization"] == f"Bearer {vendor.key}"
    else:
        assert "Authorization" not in headers


@vendors("responses")
async def test_responses_request_translation(vendor: Vendor) -> None:
    request = ChatRequest(
        messages=TOOL_ROUND_TRIP,
        tools=[LIGHTS_TOOL],
        tool_choice={"type": "function", "function": {"name": "HassTurnOn"}},
        max_tokens=300,
    )

    await vendor.backend.complete(request)

    sent = body(vendor.fake)
    assert vendor.fake.paths() == ["/v1/responses"]
    assert sent["instructions"] == "You control the workshop."
    assert sent["input"] == [
        {"role": "user", "content": "Turn on the workshop lights"},
        {
            "type": "function_call",
            "call_id": "call_lights1",
            "name": "HassTurnOn",
            "arguments": '{"name": "workshop lights"}',
        },
        {"type": "function_call_output", "call_id": "call_lights1", "output": '{"success": true}'},
    ]
    assert sent["tools"] == [
        {
            "type": "function",
            "name": "HassTurnOn",
            "description": "Turns on a device or entity",
            "parameters": LIGHTS_TOOL["function"]["parameters"],
            "strict": False,
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "name": "HassTurnOn"}
    assert sent["max_output_tokens"] == 300
    assert sent["store"] is False


@vendors("anthropic")
async def test_anthropic_request_translation(vendor: Vendor) -> None:
    """Tool results go back as `tool_result` blocks; system text and roles are Anthropic's."""
    messages = [
        *TOOL_ROUND_TRIP,
        {"role": "user", "content": "And the fan?"},
        {"role": "system", "content": "Answer briefly."},
    ]
    request = ChatRequest(
        messages=messages, tools=[LIGHTS_TOOL], tool_choice="required", temperature=0.3
    )

    await vendor.backend.complete(request)

    recorded = vendor.fake.requests[0]
    sent = recorded.body
    assert recorded.path == "/v1/messages"
    assert recorded.headers["x-api-key"] == ANTHROPIC_KEY
    assert recorded.headers["anthropic-version"] == "2023-06-01"
    assert sent["system"] == "You control the workshop.\n\nAnswer briefly."
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Turn on the workshop lights"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_lights1",
                    "name": "HassTurnOn",
                    "input": {"name": "workshop lights"},
                }
            ],
        },
        # The tool result and the next question merge: Anthropic wants roles to alternate.
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "call_lights1",
                    "content": '{"success": true}',
                },
                {"type": "text", "text": "And the fan?"},
            ],
        },
    ]
    assert sent["tools"] == [
        {
            "name": "HassTurnOn",
            "description": "Turns on a device or entity",
            "input_schema": LIGHTS_TOOL["function"]["parameters"],
        }
    ]
    assert sent["tool_choice"] == {"type": "any"}
    assert sent["max_tokens"] == 1024
    assert "temperature" not in sent


@vendors("perplexity")
async def test_perplexity_gets_an_alternating_conversation_without_tools(vendor: Vendor) -> None:
    """The search model takes no tools: tool turns are dropped and the roles still alternate."""
    messages = [*TOOL_ROUND_TRIP, {"role": "user", "content": "What is the newest Klipper?"}]
    request = ChatRequest(messages=messages, tools=[LIGHTS_TOOL], logprobs=True)

    reply = await vendor.backend.complete(request)

    assert reply.content == "OK."
    sent = body(vendor.fake)
    assert vendor.fake.paths() == ["/chat/completions"]
    assert sent["messages"] == [
        {"role": "system", "content": "You control the workshop."},
        {
            "role": "user",
            "content": "Turn on the workshop lights\n\nWhat is the newest Klipper?",
        },
    ]
    assert "tools" not in sent
    assert "logprobs" not in sent


@vendors("ollama", "openai", "responses", "anthropic")
@STREAM_OR_NOT
async def test_fake_refuses_a_tool_result_without_its_call(vendor: Vendor, streaming: bool) -> None:
    """The fakes check tool round trips like the vendors do, so the translations above count."""
    orphan = [{"role": "tool", "tool_call_id": "call_unknown", "content": "done"}]
    request = ChatRequest(messages=[*QUESTION.messages, *orphan])

    if vendor.name == "ollama":
        # Ollama is lenient: it takes the result without asking which call it answers.
        reply = await ask(vendor.backend, request, streaming=streaming)
        assert reply.content == "OK."
        return
    with pytest.raises(BackendError) as caught:
        await ask(vendor.backend, request, streaming=streaming)

    assert caught.value.status == 400
    assert not caught.value.retryable
    assert "tool" in str(caught.value)


# --------------------------------------------------------------------------- usage and logprobs


@vendors("openai", "responses", "llamacpp", "anthropic")
@STREAM_OR_NOT
async def test_usage_splits_cache_and_reasoning(vendor: Vendor, streaming: bool) -> None:
    """Cached, cache-written and reasoning tokens come out the same for every vendor."""
    vendor.fake.enqueue(
        ScriptedReply(
            ANSWER,
            prompt_tokens=1000,
            cached_tokens=600,
            cache_write_tokens=100,
            output_tokens=90,
            reasoning_tokens=40,
        )
    )

    reply = await ask(vendor.backend, QUESTION, streaming=streaming)

    # Anthropic counts thinking inside its output tokens without saying how many.
    reasoning = 0 if vendor.name == "anthropic" else 40
    assert reply.usage == TokenUsage(
        input=300, cache_read=600, cache_write=100, output=90, reasoning=reasoning
    )


@vendors("ollama")
@STREAM_OR_NOT
async def test_ollama_usage_counts_evaluated_prompt_tokens(vendor: Vendor, streaming: bool) -> None:
    vendor.fake.enqueue(ScriptedReply(ANSWER, prompt_tokens=1000, cached_tokens=600))

    reply = await ask(vendor.backend, QUESTION, streaming=streaming)

    assert reply.usage == TokenUsage(input=400, output=5)


@vendors(*WITH_LOGPROBS)
@STREAM_OR_NOT
async def test_logprobs_come_with_their_runner_up(vendor: Vendor, streaming: bool) -> None:
    vendor.fake.enqueue(
        ScriptedReply("Lights on now.", token_logprob=[-0.01, -0.5, -2.25], top2_gap=1.5)
    )
    request = ChatRequest(messages=QUESTION.messages, logprobs=True)

    reply = await ask(vendor.backend, request, streaming=streaming)

    assert reply.logprobs == (
        TokenLogprob("Lights", -0.01, (-0.01, -1.51)),
        TokenLogprob(" on", -0.5, (-0.5, -2.0)),
        TokenLogprob(" now.", -2.25, (-2.25, -3.75)),
    )
    sent = body(vendor.fake)
    if vendor.name == "responses":
        assert sent["top_logprobs"] == 2
        assert sent["include"] == ["message.output_text.logprobs"]
    else:
        assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)


# --------------------------------------------------------------------------- failures


@vendors()
@STREAM_OR_NOT
@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (429, 7.0)], ids=["500", "429"])
async def test_server_errors_are_retryable_with_their_message(
    vendor: Vendor, streaming: bool, status: int, retry_after: float | None
) -> None:
    vendor.fake.enqueue(
        ScriptedError(status, "Slow down, the GPU is busy", retry_after=retry_after)
    )

    with pytest.raises(BackendError) as caught:
        await ask(vendor.backend, QUESTION, streaming=streaming)

    error = caught.value
    assert (error.status, error.retry_after, error.retryable) == (status, retry_after, True)
    assert error.backend == vendor.name
    assert str(error) == f"{vendor.name}: Slow down, the GPU is busy"


@vendors()
async def test_error_inside_a_stream_ends_it(vendor: Vendor) -> None:
    """A server failing mid-answer raises after the text it managed, and may be retried."""
    status = 529 if vendor.name == "anthropic" else 500
    vendor.fake.enqueue(ScriptedError(status, "Overloaded", after_text="The workshop"))
    received: list[str | BackendReply] = []

    with pytest.raises(BackendError) as caught:
        await drain(vendor.backend.stream(QUESTION), into=received)

    assert received == ["The", " workshop"]
    assert caught.value.retryable
    assert caught.value.status == status
    assert "Overloaded" in str(caught.value)


@vendors(*WITH_KEYS)
@STREAM_OR_NOT
@pytest.mark.parametrize("wrong_key", ["sk-wrong-key-31337xyz", None], ids=["wrong", "missing"])
async def test_bad_key_is_refused_and_never_shown(
    vendor: Vendor, session: aiohttp.ClientSession, streaming: bool, wrong_key: str | None
) -> None:
    backend = make_backend(vendor.name, vendor.fake.url, session, api_key=wrong_key)

    with pytest.raises(BackendError) as caught:
        await ask(backend, QUESTION, streaming=streaming)

    assert caught.value.status == 401
    assert not caught.value.retryable
    assert vendor.key is not None
    assert vendor.key not in str(caught.value)
    if wrong_key:
        assert wrong_key not in str(caught.value)


@vendors(*WITH_KEYS)
async def test_key_echoed_by_a_server_is_scrubbed(vendor: Vendor) -> None:
    assert vendor.key is not None
    vendor.fake.enqueue(ScriptedError(400, f"Key {vendor.key} may not use this model"))

    with pytest.raises(BackendError) as caught:
        await vendor.backend.complete(QUESTION)

    assert str(caught.value) == f"{vendor.name}: Key *** may not use this model"


@vendors()
async def test_stalled_server_times_out(vendor: Vendor, session: aiohttp.ClientSession) -> None:
    backend = make_backend(vendor.name, vendor.fake.url, session, timeout=0.1)
    vendor.fake.enqueue(ScriptedReply(ANSWER, delay=3.0))
    started = time.monotonic()

    with pytest.raises(BackendError) as caught:
        await backend.complete(QUESTION)

    assert time.monotonic() - started < 1.5
    assert (caught.value.status, caught.value.retryable) == (None, True)
    assert "0.1 s" in str(caught.value)


@vendors()
async def test_stream_going_silent_times_out(
    vendor: Vendor, session: aiohttp.ClientSession
) -> None:
    """The stream timeout is between chunks: a server that stops talking mid-answer fails."""
    backend = make_backend(vendor.name, vendor.fake.url, session, timeout=0.1)
    # Each pause alone is longer than the timeout.
    vendor.fake.enqueue(ScriptedReply(ANSWER, chunk_delay=3.0))
    received: list[str | BackendReply] = []

    with pytest.raises(BackendError) as caught:
        await drain(backend.stream(QUESTION), into=received)

    assert received == ["The"]
    assert (caught.value.status, caught.value.retryable) == (None, True)


@vendors("ollama", "openai", "llamacpp")
async def test_slow_stream_within_the_timeout_succeeds(
    vendor: Vendor, session: aiohttp.ClientSession
) -> None:
    """A long answer may take longer than the timeout, as long as chunks keep coming."""
    backend = make_backend(vendor.name, vendor.fake.url, session, timeout=0.15)
    vendor.fake.enqueue(ScriptedReply(ANSWER, chunk_delay=0.05))

    reply = await ask(backend, QUESTION, streaming=True)

    assert reply.content == ANSWER


@pytest.mark.parametrize("name", list(VENDORS))
async def test_refused_connection(name: str, session: aiohttp.ClientSession) -> None:
    backend = make_backend(name, f"http://127.0.0.1:{free_port()}", session)

    for call in (backend.complete(QUESTION), ask(backend, QUESTION, streaming=True)):
        with pytest.raises(BackendError) as caught:
            await call
        assert (caught.value.status, caught.value.retryable) == (None, True)
        assert str(caught.value).startswith(f"{name}: cannot reach the server")


@vendors("ollama", "openai")
async def test_trailing_slash_in_the_url(vendor: Vendor, session: aiohttp.ClientSession) -> None:
    backend = make_backend(vendor.name, vendor.fake.url + "/", session)

    reply = await backend.complete(QUESTION)

    assert reply.content == "OK."
    assert vendor.fake.paths()[0] in {"/api/chat", "/v1/chat/completions"}


# --------------------------------------------------------------------------- scripting


@vendors("openai")
async def test_responder_answers_once_the_queue_is_empty(vendor: Vendor) -> None:
    vendor.fake.enqueue(ScriptedReply("First."))
    vendor.fake.respond_with(
        lambda sent: ScriptedReply(f"You said: {sent['messages'][-1]['content']}")
    )

    first = await vendor.backend.complete(QUESTION)
    second = await vendor.backend.complete(QUESTION)

    assert (first.content, second.content) == ("First.", "You said: Are the workshop lights on?")


# --------------------------------------------------------------------------- embeddings and search


@vendors("ollama", "openai")
async def test_embeddings(vendor: Vendor) -> None:
    texts = ["turn on the workshop lights", "is the printer done?"]

    vectors = await vendor.backend.embed(texts)

    assert vectors == [pytest.approx(embedding(text)) for text in texts]
    sent = body(vendor.fake)
    assert sent["input"] == texts
    assert sent["model"] == f"{vendor.name}-model"
    assert vendor.fake.paths() == (
        ["/api/embed"] if vendor.name == "ollama" else ["/v1/embeddings"]
    )


@vendors("anthropic")
async def test_anthropic_has_no_embeddings(vendor: Vendor) -> None:
    with pytest.raises(BackendError) as caught:
        await vendor.backend.embed(["anything"])

    assert not caught.value.retryable
    assert vendor.fake.requests == []


@vendors("perplexity")
@STREAM_OR_NOT
async def test_perplexity_citations(vendor: Vendor, streaming: bool) -> None:
    sources = ["https://www.klipper3d.org/Releases.html", "https://github.com/Klipper3d/klipper"]
    vendor.fake.enqueue(ScriptedReply("Klipper 0.13 is the newest.", citations=sources))

    reply = await ask(vendor.backend, QUESTION, streaming=streaming)

    assert reply.citations == tuple(sources)
    assert reply.content == "Klipper 0.13 is the newest."


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "Retry-After": "1"}, 0.25),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_forms(headers: dict[str, str], seconds: float | None) -> None:
    """Seconds, OpenAI's milliseconds and HTTP dates (past ones mean now) are understood."""
    assert retry_after_seconds(CIMultiDict(headers)) == seconds


def test_retry_after_date_in_the_future() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)

    seconds = retry_after_seconds(CIMultiDict({"Retry-After": format_datetime(when, usegmt=True)}))

    assert seconds == pytest.approx(30, abs=2)
