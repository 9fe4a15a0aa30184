"""The router as its users meet it: a real process, its OpenAI API, fake paid clouds."""

import asyncio
import json

import pytest

from kittyai.contract import ROUTER_DECISION, ROUTER_STATS
from kittyai.contract.routing import RouterStats, RoutingDecision
from tests.helpers.broker import MosquittoBroker
from tests.helpers.fake_llm import ScriptedError, ScriptedReply
from tests.lib.mqtt_probe import MqttProbe, on, text
from tests.lib.router.conftest import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    PERPLEXITY_KEY,
    StartRouter,
)
from tests.lib.test_contract import validator

SURE = {"token_logprob": -0.02, "top2_gap": 4.0}
UNSURE = {"token_logprob": -2.5, "top2_gap": 0.05}


def openai_cost(prompt: int, cached: int, output: int) -> float:
    """What the test's OpenAI price table charges, in USD."""
    return ((prompt - cached) * 0.25 + cached * 0.025 + output * 2.0) / 1_000_000


async def test_a_question_the_local_model_is_sure_of_stays_local(
    start_router: StartRouter,
) -> None:
    stack = await start_router()
    stack.ollama.enqueue(ScriptedReply(content="Dry PETG at 65 °C for 4 hours.", **SURE))

    result = await stack.chat("How long should I dry PETG?")

    assert result.status == 200
    assert result.text == "Dry PETG at 65 °C for 4 hours."
    decision = result.decision
    assert (decision.tier, decision.backend, decision.reason) == ("local", "ollama", "confident")
    assert decision.cost_usd == 0
    assert decision.confidence is not None
    assert decision.confidence > decision.threshold
    assert result.headers["X-Kitty-Tier"] == "local"
    assert stack.cloud_requests() == 0
    status, page = await stack.get("/api/routing/logs", tier="local")
    assert status == 200
    assert [item["id"] for item in page["items"]] == [decision.id]


async def test_an_unsure_local_answer_escalates_to_the_cloud_and_is_costed(
    start_router: StartRouter,
) -> None:
    stack = await start_router()
    stack.ollama.enqueue(ScriptedReply(content="Maybe 3 mm?", **UNSURE))
    stack.openai.enqueue(
        ScriptedReply(
            content="Use M3 heat-set inserts, 5.7 mm long.",
            prompt_tokens=1000,
            cached_tokens=200,
            output_tokens=100,
        )
    )

    result = await stack.chat("Which inserts fit a 4 mm wall in PETG?")

    decision = result.decision
    assert result.text == "Use M3 heat-set inserts, 5.7 mm long."
    assert (decision.tier, decision.backend, decision.reason) == (
        "cloud",
        "openai",
        "low_confidence",
    )
    assert decision.confidence is not None
    assert decision.confidence < decision.threshold
    assert decision.usage.input == 800
    assert decision.usage.cache_read == 200
    assert decision.cost_usd == pytest.approx(openai_cost(1000, 200, 100))
    assert [(a.backend, a.outcome) for a in decision.attempts] == [
        ("ollama", "low_confidence"),
        ("openai", "ok"),
    ]
    assert float(result.headers["X-Kitty-Cost-USD"]) == pytest.approx(decision.cost_usd, abs=1e-6)


async def test_fresh_facts_go_straight_to_the_search_model(start_router: StartRouter) -> None:
    stack = await start_router()
    stack.perplexity.enqueue(
        ScriptedReply(
            content="Firmware 01.09 came out last week.",
            citations=["https://wiki.bambulab.com/firmware"],
        )
    )

    result = await stack.chat("What's the latest Bambu firmware?")

    decision = result.decision
    assert (decision.tier, decision.backend, decision.reason) == (
        "search",
        "perplexity",
        "freshness",
    )
    assert result.body["citations"] == ["https://wiki.bambulab.com/firmware"]
    assert stack.ollama.requests == []
    assert decision.cost_usd >= 0.005  # the per-request search fee


async def test_failing_cloud_backends_are_retried_then_fall_back(
    start_router: StartRouter,
) -> None:
    stack = await start_router()
    stack.ollama.enqueue(ScriptedReply(content="Not sure.", **UNSURE))
    stack.openai.enqueue(
        ScriptedError(status=500, message="upstream exploded"),
        ScriptedError(status=429, message="slow down", retry_after=0),
    )
    stack.anthropic.enqueue(ScriptedReply(content="Tighten the eccentric nuts a quarter turn."))

    result = await stack.chat("My X axis wobbles, what do I adjust?", stream=True)

    assert result.text == "Tighten the eccentric nuts a quarter turn."
    decision = result.decision
    assert (decision.tier, decision.backend) == ("cloud", "anthropic")
    assert [(a.backend, a.outcome, a.status) for a in decision.attempts] == [
        ("ollama", "low_confidence", None),
        ("openai", "error", 500),
        ("openai", "error", 429),
        ("anthropic", "ok", None),
    ]
    assert len(stack.openai.requests) == 2
    status, page = await stack.get("/api/routing/logs")
    assert status == 200
    assert page["items"][0]["attempts"] == [a.model_dump(mode="json") for a in decision.attempts]


async def test_a_hard_budget_keeps_the_cloud_out_and_says_so(start_router: StartRouter) -> None:
    stack = await start_router(
        budgets=[{"scope": "global", "period": "daily", "soft_usd": 0.0001, "hard_usd": 0.0003}]
    )
    stack.ollama.enqueue(
        ScriptedReply(content="Hmm.", **UNSURE), ScriptedReply(content="Perhaps 0.2 mm.", **UNSURE)
    )
    stack.openai.enqueue(
        ScriptedReply(content="Use 0.2 mm layers.", prompt_tokens=1000, output_tokens=100)
    )
    spent = (await stack.chat("What layer height for a 0.4 nozzle?")).decision.cost_usd
    assert spent > 0.0003

    result = await stack.chat("What first layer height for a 0.6 nozzle?")

    decision = result.decision
    assert result.text == "Perhaps 0.2 mm."
    assert (decision.tier, decision.reason, decision.budget_blocked) == (
        "local",
        "budget_exceeded",
        True,
    )
    assert decision.notice
    assert len(stack.openai.requests) == 1
    stats = RouterStats.model_validate((await stack.get("/api/routing/stats"))[1])
    assert [(b.scope, b.state, b.left_usd) for b in stats.budgets] == [("global", "hard", 0.0)]


async def test_a_paraphrase_hits_the_semantic_cache_but_live_state_never_does(
    start_router: StartRouter,
) -> None:
    stack = await start_router()
    stack.ollama.respond_with(lambda _body: ScriptedReply(content="Dry it at 65 °C.", **SURE))

    await stack.chat("How do I dry PETG filament?")
    result = await stack.chat("what's the best way to dry petg filament")

    decision = result.decision
    assert (decision.tier, decision.reason, decision.cache_hit) == ("cache", "semantic_cache", True)
    assert decision.cache_similarity is not None
    assert decision.cache_similarity >= 0.9
    assert result.text == "Dry it at 65 °C."
    assert len(stack.ollama.requests) == 1

    for _ in range(2):
        assert (await stack.chat("Is the workshop door locked?")).decision.tier == "local"
    assert len(stack.ollama.requests) == 3


async def test_a_restart_keeps_the_log_the_ledger_and_the_budgets(
    start_router: StartRouter,
) -> None:
    budget = {"budgets": [{"scope": "openai", "period": "monthly", "hard_usd": 0.0001}]}
    stack = await start_router(**budget)
    stack.ollama.enqueue(ScriptedReply(content="?", **UNSURE))
    stack.openai.enqueue(ScriptedReply(content="Yes.", prompt_tokens=500, output_tokens=50))
    before = (await stack.chat("Can PLA go in a dishwasher?")).decision
    await asyncio.to_thread(stack.router.stop)

    stack = await start_router(**budget)

    status, page = await stack.get("/api/routing/logs")
    assert status == 200
    assert RoutingDecision.model_validate(page["items"][0]) == before
    stats = RouterStats.model_validate((await stack.get("/api/routing/stats"))[1])
    assert stats.cost_month_usd == pytest.approx(before.cost_usd)
    assert [(b.scope, b.state) for b in stats.budgets] == [("openai", "hard")]


async def test_tool_calls_pass_through_to_the_client(start_router: StartRouter) -> None:
    stack = await start_router()
    stack.ollama.enqueue(
        ScriptedReply(content="", tool_calls=[("HassTurnOn", {"name": "bench lamp"})], **SURE)
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "HassTurnOn",
                "description": "Turns on a device",
                "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
        }
    ]

    result = await stack.chat("switch the bench lamp on", stream=True, tools=tools)

    calls = [
        call
        for chunk in result.chunks
        for choice in chunk.get("choices", [])
        for call in choice["delta"].get("tool_calls", [])
    ]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("HassTurnOn", {"name": "bench lamp"})
    ]
    assert result.chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert stack.ollama.requests[0].body["tools"][0]["function"]["name"] == "HassTurnOn"


async def test_a_stream_carries_the_route_in_headers_and_the_decision_last(
    start_router: StartRouter,
) -> None:
    stack = await start_router()
    stack.ollama.enqueue(ScriptedReply(content="A brim helps corners stick.", **SURE))

    result = await stack.chat(
        "Why do my corners lift?", stream=True, stream_options={"include_usage": True}
    )

    assert result.headers["Content-Type"].startswith("text/event-stream")
    assert (result.headers["X-Kitty-Tier"], result.headers["X-Kitty-Backend"]) == (
        "local",
        "ollama",
    )
    assert result.text == "A brim helps corners stick."
    assert result.chunks[-1]["usage"]["completion_tokens"] > 0
    assert result.decision.ttft_ms is not None


async def test_models_list_profiles_then_backends(start_router: StartRouter) -> None:
    stack = await start_router()

    status, body = await stack.get("/v1/models")

    assert status == 200
    assert [(m["id"], m["kitty"]["kind"]) for m in body["data"]] == [
        ("kitty-auto", "profile"),
        ("kitty-local", "profile"),
        ("kitty-cloud", "profile"),
        ("ollama", "backend"),
        ("openai", "backend"),
        ("anthropic", "backend"),
        ("perplexity", "backend"),
    ]


async def test_embeddings_come_from_the_offline_model(start_router: StartRouter) -> None:
    stack = await start_router()

    async with stack.session.post(
        f"{stack.router.url}/v1/embeddings",
        json={"input": ["PETG", "nozzle"]},
        headers=stack.auth,
    ) as response:
        body = await response.json()

    assert response.status == 200
    assert body["model"] == "all-minilm-l6-v2"
    assert [len(item["embedding"]) for item in body["data"]] == [384, 384]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (
            {"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}]},
            404,
            "model_not_found",
        ),
        ({"messages": []}, 422, "invalid_request"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "invalid_request"),
    ],
)
async def test_bad_requests_get_json_errors(
    start_router: StartRouter, payload: dict[str, object], status: int, code: str
) -> None:
    stack = await start_router()

    async with stack.session.post(
        f"{stack.router.url}/v1/chat/completions", json=payload, headers=stack.auth
    ) as response:
        body = await response.json()

    assert (response.status, body["error"]["code"]) == (status, code)
    assert stack.ollama.requests == []


async def test_the_chat_api_needs_the_token(start_router: StartRouter) -> None:
    stack = await start_router()

    async with stack.session.post(
        f"{stack.router.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
    ) as response:
        assert response.status == 401


async def test_decisions_and_stats_go_out_over_mqtt_and_keys_stay_secret(
    start_router: StartRouter, mqtt_broker: MosquittoBroker
) -> None:
    async with MqttProbe(mqtt_broker.port, "kitty/router/#") as probe:
        stack = await start_router()
        stack.ollama.enqueue(ScriptedReply(content="?", **UNSURE))
        stack.openai.enqueue(ScriptedReply(content="Use a 0.6 mm nozzle."))
        decision = (await stack.chat("What nozzle for wood-fill PLA?")).decision

        event = await probe.expect(on(ROUTER_DECISION.pattern))
        assert RoutingDecision.model_validate_json(text(event)) == decision
        validator(ROUTER_DECISION).validate(json.loads(text(event)))

        def counts_the_turn(message: object) -> bool:
            return (
                getattr(message, "topic").value == ROUTER_STATS.pattern  # noqa: B009
                and RouterStats.model_validate_json(text(message)).decisions == 1  # type: ignore[arg-type]
            )

        stats = await probe.expect(counts_the_turn)
        validator(ROUTER_STATS).validate(json.loads(text(stats)))

    published = "".join(text(message) for message in probe.messages)
    log = stack.router.log()
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, PERPLEXITY_KEY):
        assert secret not in published
        assert secret not in log
