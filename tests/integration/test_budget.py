"""A hard budget from end to end: router, MQTT and Home Assistant, all real.

The cloud is a protocol-faithful fake; everything else is the real thing: the router
process records what the cloud cost, publishes its statistics on the real broker, and
Home Assistant's agent, sensors and repairs react.
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import issue_registry as ir
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.kitty.const import DOMAIN
from kittyai.catalog import ServiceName
from tests.helpers.broker import MosquittoBroker
from tests.helpers.fake_llm import FakeOllama, FakeOpenAI, ScriptedReply
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    OPENAI_KEY,
    agent_router_options,
    contract_subscribed,
    kitty_agent_entry,
    wait_for,
)

UNSURE = {"token_logprob": -2.5, "top2_gap": 0.05}
ISSUE = "budget_exhausted_global_daily"


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOllama, FakeOpenAI]]:
    """An unsure local model and a cloud model that reports its token usage."""
    async with FakeOllama() as ollama, FakeOpenAI(api_key=OPENAI_KEY) as openai:
        yield ollama, openai


@pytest.fixture
async def router(
    tmp_path: Path, mqtt_broker: MosquittoBroker, fakes: tuple[FakeOllama, FakeOpenAI]
) -> AsyncIterator[ServiceProcess]:
    """A router on the test's broker whose daily cloud budget is a fraction of a cent."""
    options = agent_router_options(*fakes)
    options["backends"][1] |= {"price_input": 2.0, "price_output": 8.0}
    options["budgets"] = [{"scope": "global", "period": "daily", "hard_usd": 0.001}]
    process = ServiceProcess(
        ServiceName.ROUTER, tmp_path, mqtt_port=mqtt_broker.port, extra_options=options
    )
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.stop)


async def test_a_spent_budget_keeps_the_cloud_out_and_raises_a_repair(
    hass: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    router: ServiceProcess,
    fakes: tuple[FakeOllama, FakeOpenAI],
) -> None:
    ollama, openai = fakes
    ollama.respond_with(lambda _body: ScriptedReply(content="Perhaps 40 mm.", **UNSURE))
    openai.enqueue(ScriptedReply(content="Use 30 mm screws.", prompt_tokens=400, output_tokens=100))
    entry = kitty_agent_entry(router)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await contract_subscribed(hass)

    async def ask(text: str) -> str:
        result = await conversation.async_converse(
            hass, text, None, Context(), agent_id="conversation.kitty"
        )
        return result.response.speech["plain"]["speech"]

    # 400 * 2 + 100 * 8 USD per million tokens: 0.0016 USD, over the 0.001 budget.
    assert await ask("Which screws hold a 12 mm shelf to drywall?") == "Use 30 mm screws."
    issues = ir.async_get(hass)
    await wait_for(hass, lambda: issues.async_get_issue(DOMAIN, ISSUE) is not None, "repair")

    answer = await ask("How long should the wall anchors be?")

    assert answer.startswith("Perhaps 40 mm.")
    assert "budget" in answer
    assert len(openai.requests) == 1
    issue = issues.async_get_issue(DOMAIN, ISSUE)
    assert issue is not None
    assert issue.severity is ir.IssueSeverity.WARNING
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["scope"] == "global"
