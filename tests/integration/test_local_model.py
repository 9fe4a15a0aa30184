"""Assist through KITTY to a real local model: Gemma 3 270M on llama.cpp's server.

Nothing here is scripted: the router asks the real model, scores the answer from
the token logprobs the server returns, and HA speaks what the model generated.
"""

from collections.abc import Iterator
from pathlib import Path

from homeassistant.components import conversation
from homeassistant.components.conversation import trace
from homeassistant.const import CONF_LLM_HASS_API
from homeassistant.core import Context, HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.kitty.const import CONF_PROFILE
from kittyai.contract.routing import RoutingDecision
from tests.helpers.llama import LlamaServer
from tests.helpers.services import ServiceProcess
from tests.integration.common import kitty_agent_entry, run_router


@pytest.fixture
def gemma_router(tmp_path: Path, llama_server: LlamaServer) -> Iterator[ServiceProcess]:
    """A router whose one backend is the real local model."""
    yield from run_router(
        tmp_path,
        backends=[
            {
                "name": "gemma",
                "kind": "openai_compatible",
                "url": llama_server.url,
                "model": llama_server.model,
                "timeout": 120,
            }
        ],
    )


async def test_assist_gets_a_real_answer_with_a_real_confidence(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, gemma_router: ServiceProcess
) -> None:
    # No HA tools: a 270M model answers plain questions, and the prompt stays short.
    entry = kitty_agent_entry(gemma_router, **{CONF_PROFILE: "kitty-local", CONF_LLM_HASS_API: []})
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)

    result = await conversation.async_converse(
        hass,
        "What does PWM stand for?",
        None,
        Context(),
        agent_id="conversation.kitty",
    )

    spoken = result.response.speech["plain"]["speech"]
    assert result.response.response_type.value == "action_done"
    # What a 270M model says varies with the time in HA's prompt; that it speaks does not.
    assert spoken.strip()
    events = trace.async_get_traces()[-1].as_dict()["events"]
    (route,) = [
        RoutingDecision.model_validate(event["data"]["kitty_route"])
        for event in events
        if "kitty_route" in event.get("data", {})
    ]
    assert (route.tier, route.backend, route.reason) == ("local", "gemma", "requested")
    assert route.confidence is not None
    assert 0 < route.confidence <= 1
    assert {"low_token_prob", "top_margin"} <= set(route.scores)
    assert route.usage.output > 0
    assert route.cost_usd == 0
