"""The CAD service's model client against FakeOpenAI, a real OpenAI-compatible server."""

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kittyai.chat_model import JSON_MAX_TOKENS, ChatModel, ModelError, ModelOptions
from tests.helpers.fake_llm import FakeOpenAI, Scripted, ScriptedError, ScriptedReply

SCHEMA = {"type": "object", "properties": {"family": {"type": "string"}}}
MESSAGES = [{"role": "user", "content": "a spacer"}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


def like_llama_cpp_python(body: dict[str, Any]) -> Scripted:
    """Answer as llama-cpp-python's server does: `json_schema` is an error, `json_object` works."""
    if body["response_format"]["type"] != "json_object":
        return ScriptedError(500, message="response_format type must be text or json_object")
    return ScriptedReply('{"family": "spacer"}')


async def test_a_server_without_json_schema_gets_json_object_with_the_schema(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.respond_with(like_llama_cpp_python)
    model = ChatModel(session, ModelOptions(url=fake.url, max_tokens=300))

    first = await model.complete_json(MESSAGES, schema_name="choice", schema=SCHEMA)
    second = await model.complete_json(MESSAGES, schema_name="choice", schema=SCHEMA)

    assert first == second == {"family": "spacer"}
    formats = [request.body["response_format"] for request in fake.requests]
    # Refused once, then the form that works is kept: three requests for two answers.
    assert formats == [
        {"type": "json_schema", "json_schema": {"name": "choice", "schema": SCHEMA}},
        {"type": "json_object", "schema": SCHEMA},
        {"type": "json_object", "schema": SCHEMA},
    ]
    assert {request.body["max_tokens"] for request in fake.requests} == {300}


async def test_a_busy_server_is_an_error_not_a_reason_to_change_the_request(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.enqueue(ScriptedError(503))
    model = ChatModel(session, ModelOptions(url=fake.url))

    with pytest.raises(ModelError, match="HTTP 503"):
        await model.complete_json(MESSAGES, schema_name="choice", schema=SCHEMA)
    assert len(fake.requests) == 1
    # A choice and a few numbers: far fewer tokens than a script may take.
    assert fake.requests[0].body["max_tokens"] == JSON_MAX_TOKENS < model.options.max_tokens


async def test_a_fenced_json_answer_is_read_and_prose_is_an_error(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.enqueue(ScriptedReply('```json\n{"family": "knob"}\n```'), ScriptedReply("A knob."))
    model = ChatModel(session, ModelOptions(url=fake.url))

    assert await model.complete_json(MESSAGES, schema_name="c", schema=SCHEMA) == {"family": "knob"}
    with pytest.raises(ModelError, match="did not answer JSON"):
        await model.complete_json(MESSAGES, schema_name="c", schema=SCHEMA)
