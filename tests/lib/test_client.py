"""KittyClient's router calls: against a real router, and against servers that misbehave."""

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
import pytest

from kittyai.catalog import ServiceName
from kittyai.client import (
    KittyAuthError,
    KittyClient,
    KittyConnectionError,
    KittyError,
    KittyResponseError,
    ModelKind,
    RouterModel,
)
from kittyai.contract.routing import RouteReason, Tier
from tests.helpers.fake_llm import FakeOllama, ScriptedReply
from tests.helpers.net import free_port
from tests.lib.conftest import StartService

TOKEN = "client-token-0123456789"


async def test_router_calls(start_service: StartService, session: aiohttp.ClientSession) -> None:
    """Models, a streamed chat turn, an intent turn and the statistics, from a real router."""
    async with FakeOllama() as ollama:
        router = await start_service(
            ServiceName.ROUTER,
            mqtt=False,
            token=TOKEN,
            extra_options={
                "backends": [
                    {"name": "shop", "kind": "ollama", "url": ollama.url, "model": "llama3.2"}
                ],
                "cache": {"enabled": False},
            },
        )
        client = KittyClient(session, router.url, TOKEN)
        ollama.enqueue(ScriptedReply("Hello from the shop."))

        models = await client.list_models()
        chunks = [
            chunk
            async for chunk in client.chat_stream(
                {
                    "model": "kitty-local",
                    "messages": [{"role": "user", "content": "Say hello"}],
                    "kitty": {"conversation_id": "chat-1"},
                }
            )
        ]
        intent_decision = await client.report_intent_turn(
            conversation_id="chat-2", latency_ms=8.5, intent="HassTurnOn"
        )
        stats = await client.get_routing_stats()

    assert [model.id for model in models] == ["kitty-auto", "kitty-local", "kitty-cloud", "shop"]
    assert models[-1] == RouterModel(
        id="shop", kind=ModelKind.BACKEND, role="local", description="ollama model llama3.2"
    )
    text = "".join(
        choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"]
    )
    assert text == "Hello from the shop."
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["kitty"]["tier"] == "local"
    assert final["kitty"]["conversation_id"] == "chat-1"
    assert intent_decision.tier is Tier.INTENT
    assert intent_decision.reason is RouteReason.INTENT_MATCH
    assert intent_decision.conversation_id == "chat-2"
    assert stats.decisions == 2


type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _sse(request: web.Request, *events: bytes) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in events:
        await response.write(event)
    await response.write_eof()
    return response


async def _not_json(request: web.Request) -> web.StreamResponse:
    return await _sse(request, b'data: {"choices": []}\n\n', b"data: <html>\n\n")


async def _no_done(request: web.Request) -> web.StreamResponse:
    return await _sse(request, b": keep-alive\n\n", b'data: {"choices": []}\n\n')


async def _error_event(request: web.Request) -> web.StreamResponse:
    error = b'data: {"error": {"code": "no_answer", "message": "No model could answer."}}\n\n'
    return await _sse(request, error)


async def _bad_gateway(request: web.Request) -> web.StreamResponse:
    error = {"error": {"code": "no_answer", "message": "No model could answer."}}
    return web.json_response(error, status=502)


async def _unauthorized(request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": {"code": "unauthorized"}}, status=401)


@pytest.mark.parametrize(
    ("handler", "error", "message"),
    [
        (_not_json, KittyResponseError, "sent an event that is no JSON object"),
        (_no_done, KittyResponseError, "ended its stream without [DONE]"),
        (_error_event, KittyResponseError, "failed: No model could answer."),
        (_bad_gateway, KittyResponseError, "answered HTTP 502: No model could answer."),
        (_unauthorized, KittyAuthError, "rejected the token"),
    ],
)
async def test_chat_stream_errors(
    session: aiohttp.ClientSession, handler: Handler, error: type[KittyError], message: str
) -> None:
    """Whatever goes wrong is a KittyError that says what, without the token."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        client = KittyClient(session, f"http://127.0.0.1:{port}", TOKEN)
        with pytest.raises(error) as raised:
            async for _ in client.chat_stream({"messages": [{"role": "user", "content": "Hi"}]}):
                pass
    finally:
        await runner.cleanup()
    assert message in str(raised.value)
    assert TOKEN not in str(raised.value)


async def test_unreachable_router(session: aiohttp.ClientSession) -> None:
    """A closed port is a connection error, for the stream as for every other call."""
    client = KittyClient(session, f"http://127.0.0.1:{free_port()}", TOKEN)
    calls: list[Callable[[], Awaitable[Any]]] = [
        client.list_models,
        client.get_routing_stats,
        lambda: client.report_intent_turn(conversation_id=None, latency_ms=1, intent=None),
        lambda: anext(aiter(client.chat_stream({"messages": []}))),
    ]
    for call in calls:
        with pytest.raises(KittyConnectionError):
            await call()


async def test_answers_that_are_no_kitty_answers(session: aiohttp.ClientSession) -> None:
    """JSON of another shape is refused, not half read."""

    async def other_json(request: web.Request) -> web.Response:
        status = 201 if request.method == "POST" else 200
        return web.json_response({"hello": "world"}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", other_json)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = KittyClient(session, f"http://127.0.0.1:{port}", TOKEN)
    try:
        with pytest.raises(KittyResponseError, match="invalid model list"):
            await client.list_models()
        with pytest.raises(KittyResponseError, match="invalid routing statistics"):
            await client.get_routing_stats()
        with pytest.raises(KittyResponseError, match="invalid routing decision"):
            await client.report_intent_turn(conversation_id=None, latency_ms=1, intent=None)
    finally:
        await runner.cleanup()
