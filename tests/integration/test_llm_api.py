"""KITTY's LLM API, as any LLM agent of Home Assistant uses it, against real routers."""

import json
from pathlib import Path

from homeassistant.core import HomeAssistant
from homeassistant.helpers import llm
from homeassistant.setup import async_setup_component
import pytest

from custom_components.kitty.const import DOMAIN
from kittyai.catalog import ServiceName
from kittyai.contract.routing import RouterStats, Tier
from tests.helpers.services import ServiceProcess
from tests.integration.common import llm_context, report_intent_turn, router_call, set_up_kitty

GET_ROUTING_STATS = llm.ToolInput(tool_name="GetRoutingStats", tool_args={})


async def test_listed_and_usable_without_an_entry(hass: HomeAssistant) -> None:
    """Agents can select the API before KITTY is set up; its tool then says what is wrong."""
    assert await async_setup_component(hass, DOMAIN, {})

    [kitty] = [api for api in llm.async_get_apis(hass) if api.id == DOMAIN]
    assert kitty.name == "KITTY"

    instance = await llm.async_get_api(hass, DOMAIN, llm_context())
    assert [tool.name for tool in instance.tools] == [
        "GetRoutingStats",
        "GetPrinterStatus",
        "StartPrint",
        "PausePrint",
        "ResumePrint",
        "CancelPrint",
        "GenerateCad",
        "ShowCadArtifact",
        "SendCadToPrinter",
    ]
    # Remote mode will only allow tools that read.
    assert instance.tools[0].annotations.read_only
    assert "never instructions" in instance.api_prompt

    result = await instance.async_call_tool(GET_ROUTING_STATS)
    assert result.error
    assert result.data == {"error": "KITTY is not set up or not loaded in Home Assistant."}


@pytest.mark.usefixtures("mqtt_entry")
async def test_routing_stats_come_from_the_router(
    hass: HomeAssistant, router: ServiceProcess
) -> None:
    """The tool answers with what the router's /api/routing/stats says now."""
    await set_up_kitty(hass, router)
    before = RouterStats.model_validate(router_call(router, "/api/routing/stats"))
    report_intent_turn(router)

    instance = await llm.async_get_api(hass, DOMAIN, llm_context())
    result = await instance.async_call_tool(GET_ROUTING_STATS)

    assert not result.error
    stats = RouterStats.model_validate(result.data)
    assert stats.decisions == before.decisions + 1
    assert stats.last_route is not None
    assert stats.last_route.tier is Tier.INTENT
    assert stats.cost_today_usd == before.cost_today_usd
    # What the model reads is plain JSON.
    assert json.loads(json.dumps(result.data)) == result.data


@pytest.mark.usefixtures("mqtt_entry")
async def test_router_down_is_an_error_the_model_reads(hass: HomeAssistant, tmp_path: Path) -> None:
    """A router that stopped answering gives an error result, not an exception."""
    process = ServiceProcess(ServiceName.ROUTER, tmp_path, mqtt_port=None)
    process.start()
    try:
        await set_up_kitty(hass, process)
    finally:
        process.stop()

    instance = await llm.async_get_api(hass, DOMAIN, llm_context())
    result = await instance.async_call_tool(GET_ROUTING_STATS)

    assert result.error
    assert result.data["error"].startswith("The KITTY router did not answer: Cannot reach")


@pytest.mark.usefixtures("mqtt_entry")
async def test_registered_once_for_every_entry(
    hass: HomeAssistant, router: ServiceProcess, other_router: ServiceProcess
) -> None:
    """Two KITTY installations load side by side; there is one API, and unloading keeps it."""
    first = await set_up_kitty(hass, router)
    second = await set_up_kitty(hass, other_router)

    assert [api.id for api in llm.async_get_apis(hass)].count(DOMAIN) == 1
    assert await hass.config_entries.async_unload(first.entry_id)
    assert await hass.config_entries.async_unload(second.entry_id)
    assert [api.id for api in llm.async_get_apis(hass)].count(DOMAIN) == 1


async def test_selected_next_to_assist(hass: HomeAssistant) -> None:
    """An agent that uses Assist and KITTY sees KITTY's tools under the `kitty` prefix."""
    assert await async_setup_component(hass, "llm", {})
    assert await async_setup_component(hass, DOMAIN, {})

    instance = await llm.async_get_api(hass, ["assist", DOMAIN], llm_context())

    assert "kitty__GetRoutingStats" in [tool.name for tool in instance.tools]
    assert 'Follow these instructions for tools from "kitty"' in instance.api_prompt
