"""The real local model: llama.cpp's OpenAI-compatible server running Gemma 3 270M.

First what the server itself says on the wire (the facts the router's adapter builds
on), then the router's `openai_compatible` adapter against it. Greedy decoding
(temperature 0) makes every answer repeatable.
"""

import json
from typing import Any

import aiohttp
import pytest

from kittyai.router.backends import create_backend
from kittyai.router.backends.base import Backend, BackendReply, ChatRequest
from kittyai.router.options import BackendOptions
from tests.helpers.llama import LlamaServer

PWM_QUESTION = [{"role": "user", "content": "What does PWM stand for?"}]
TEMPERATURE_QUESTION = [{"role": "user", "content": "What is the temperature in the workshop?"}]
TURN_ON = {
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
DOOR_TOOL_TURN = [
    {
        "role": "system",
        "content": (
            "You are the voice assistant of a workshop. Answer the user in one short sentence."
        ),
    },
    {"role": "user", "content": "Is the shop door locked?"},
    {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "GetLiveContext", "arguments": "{}"},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "shop door: locked"},
]


async def _chat(
    session: aiohttp.ClientSession, server: LlamaServer, **body: Any
) -> tuple[int, dict[str, Any]]:
    request = {"model": server.model, "temperature": 0, "max_tokens": 30, **body}
    async with session.post(f"{server.url}/chat/completions", json=request) as response:
        return response.status, await response.json()


async def _chat_stream(
    session: aiohttp.ClientSession, server: LlamaServer, **body: Any
) -> list[dict[str, Any]]:
    """Return the parsed `data:` chunks of a streamed answer, up to `[DONE]`."""
    request = {"model": server.model, "temperature": 0, "max_tokens": 30, "stream": True, **body}
    chunks = []
    async with session.post(f"{server.url}/chat/completions", json=request) as response:
        assert response.status == 200
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                return chunks
            chunks.append(json.loads(line.removeprefix("data: ")))
    pytest.fail("the stream ended without [DONE]")


def _assert_token_logprobs(tokens: list[dict[str, Any]]) -> None:
    """Each token carries its logprob and the two best alternatives, the chosen one first."""
    assert tokens
    for token in tokens:
        assert token["logprob"] <= 0
        alternatives = token["top_logprobs"]
        assert len(alternatives) == 2
        assert alternatives[0]["logprob"] >= alternatives[1]["logprob"]
        # Greedy decoding picks the most likely token.
        assert alternatives[0]["token"] == token["token"]
        assert alternatives[0]["logprob"] == pytest.approx(token["logprob"])


async def test_answers_a_short_question_with_real_text(
    llama_server: LlamaServer, session: aiohttp.ClientSession
) -> None:
    status, answer = await _chat(session, llama_server, messages=PWM_QUESTION)

    assert status == 200
    choice = answer["choices"][0]
    assert "pulse width modulation" in choice["message"]["content"].lower()
    # The answer ends at the transcript's next turn, not at the token limit.
    assert choice["finish_reason"] == "stop"
    assert "User:" not in choice["message"]["content"]
    assert answer["usage"]["completion_tokens"] > 0


async def test_system_message_reaches_the_model(
    llama_server: LlamaServer, session: aiohttp.ClientSession
) -> None:
    system = {"role": "system", "content": "The workshop temperature is 19 degrees Celsius."}

    _, informed = await _chat(session, llama_server, messages=[system, *TEMPERATURE_QUESTION])
    _, uninformed = await _chat(session, llama_server, messages=TEMPERATURE_QUESTION)

    assert "19" in informed["choices"][0]["message"]["content"]
    assert "19" not in uninformed["choices"][0]["message"]["content"]


async def test_whole_answer_carries_token_logprobs(
    llama_server: LlamaServer, session: aiohttp.ClientSession
) -> None:
    _, answer = await _chat(
        session, llama_server, messages=PWM_QUESTION, logprobs=True, top_logprobs=2
    )

    choice = answer["choices"][0]
    tokens = choice["logprobs"]["content"]
    _assert_token_logprobs(tokens)
    # llama.cpp also scores the tokens of the stop sequence it cut off.
    assert "".join(token["token"] for token in tokens).startswith(choice["message"]["content"])


async def test_streamed_answer_carries_token_logprobs_in_every_chunk(
    llama_server: LlamaServer, session: aiohttp.ClientSession
) -> None:
    chunks = await _chat_stream(
        session, llama_server, messages=PWM_QUESTION, logprobs=True, top_logprobs=2
    )

    text_chunks = [chunk for chunk in chunks if chunk["choices"][0]["delta"].get("content")]
    assert text_chunks
    tokens = []
    for chunk in text_chunks:
        tokens.extend(chunk["choices"][0]["logprobs"]["content"])
    _assert_token_logprobs(tokens)
    text = "".join(chunk["choices"][0]["delta"]["content"] for chunk in text_chunks)
    assert "pulse width modulation" in text.lower()
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_tools_are_accepted_and_answered_in_text(
    llama_server: LlamaServer, session: aiohttp.ClientSession
) -> None:
    status, answer = await _chat(
        session,
        llama_server,
        messages=[{"role": "user", "content": "Turn on the bench lamp"}],
        tools=[TURN_ON],
        tool_choice="auto",
    )

    assert status == 200
    message = answer["choices"][0]["message"]
    assert message["content"].strip()
    assert not message.get("tool_calls")


async def test_forced_tool_choice_returns_a_tool_call(
    llama_server: LlamaServer, session: aiohttp.ClientSession
) -> None:
    status, answer = await _chat(
        session,
        llama_server,
        messages=[{"role": "user", "content": "Turn on the bench lamp"}],
        tools=[TURN_ON],
        tool_choice={"type": "function", "function": {"name": "HassTurnOn"}},
    )

    assert status == 200
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "HassTurnOn"
    # A grammar holds the arguments to the tool's JSON schema.
    assert isinstance(json.loads(call["function"]["arguments"])["name"], str)


async def test_answers_from_a_tool_result(
    llama_server: LlamaServer, session: aiohttp.ClientSession
) -> None:
    status, answer = await _chat(session, llama_server, messages=DOOR_TOOL_TURN)

    assert status == 200
    assert "locked" in answer["choices"][0]["message"]["content"].lower()


@pytest.fixture
def gemma(llama_server: LlamaServer, session: aiohttp.ClientSession) -> Backend:
    """Return the router's adapter for the local server, configured as the dev stack does."""
    options = BackendOptions(
        name="gemma",
        kind="openai_compatible",
        url=llama_server.url,
        model=llama_server.model,
        timeout=120,
    )
    return create_backend(options, session)


async def test_adapter_completes_with_parsed_logprobs(gemma: Backend) -> None:
    reply = await gemma.complete(
        ChatRequest(messages=PWM_QUESTION, max_tokens=30, temperature=0, logprobs=True)
    )

    assert "pulse width modulation" in reply.content.lower()
    assert reply.finish_reason == "stop"
    assert reply.usage.input > 0
    assert reply.usage.output > 0
    assert reply.logprobs
    for token in reply.logprobs:
        assert token.logprob <= 0
        assert len(token.top) == 2
        assert token.top[0] == pytest.approx(token.logprob)


async def test_adapter_streams_text_then_the_whole_answer(gemma: Backend) -> None:
    events = [
        event
        async for event in gemma.stream(
            ChatRequest(messages=PWM_QUESTION, max_tokens=30, temperature=0, logprobs=True)
        )
    ]

    *deltas, reply = events
    assert isinstance(reply, BackendReply)
    assert deltas
    assert "".join(deltas) == reply.content
    assert "pulse width modulation" in reply.content.lower()
    assert reply.logprobs
    assert all(len(token.top) == 2 for token in reply.logprobs)


async def test_adapter_sends_tools_without_breaking(gemma: Backend) -> None:
    reply = await gemma.complete(
        ChatRequest(
            messages=[{"role": "user", "content": "Turn on the bench lamp"}],
            tools=[TURN_ON],
            max_tokens=30,
            temperature=0,
        )
    )

    assert reply.content.strip()
    assert reply.tool_calls == ()


async def test_adapter_answers_from_a_tool_result(gemma: Backend) -> None:
    reply = await gemma.complete(ChatRequest(messages=DOOR_TOOL_TURN, max_tokens=30, temperature=0))

    assert "locked" in reply.content.lower()
