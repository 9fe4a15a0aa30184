"""The `kitty.ask` action: ask a KITTY agent, get its answer and how it was routed."""

from typing import Any

from homeassistant.const import CONF_TOKEN, CONF_URL
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
import voluptuous as vol

from custom_components.kitty.const import DOMAIN
from tests.helpers.fake_llm import FakeOllama, ScriptedReply
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    kitty_agent_entry,
    set_up_workshop,
)
from tests.lib.tcp_proxy import TcpProxy

pytestmark = pytest.mark.usefixtures("fresh_models")


@pytest.fixture
async def agent(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, kitty_router: ServiceProcess
) -> MockConfigEntry:
    """KITTY with its default agent, in a workshop with a light and a door."""
    await set_up_workshop(hass)
    entry = kitty_agent_entry(kitty_router)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    return entry


async def ask_kitty(hass: HomeAssistant, **data: Any) -> dict[str, Any]:
    """Call `kitty.ask` as an automation does, and return its response."""
    response = await hass.services.async_call(
        DOMAIN, "ask", data, blocking=True, return_response=True
    )
    assert response is not None
    return dict(response)


@pytest.mark.usefixtures("agent")
async def test_ask_answers_with_its_route(hass: HomeAssistant, ollama: FakeOllama) -> None:
    """The answer comes with where it was answered, by which model, why and at what cost."""
    ollama.enqueue(ScriptedReply("Use 0.2 mm layers for miniatures."))
    response = await ask_kitty(hass, text="Which layer height suits miniatures?")

    assert response["response"] == "Use 0.2 mm layers for miniatures."
    assert response["conversation_id"]
    route = response["route"]
    assert route.keys() == {
        "tier",
        "backend",
        "model",
        "reason",
        "confidence",
        "cost_usd",
        "latency_ms",
    }
    assert (route["tier"], route["backend"], route["model"]) == ("local", "ollama", "llama3.2")
    assert route["reason"] == "confident"
    assert 0.5 <= route["confidence"] <= 1
    assert route["cost_usd"] == 0
    assert route["latency_ms"] > 0


@pytest.mark.usefixtures("agent")
async def test_ask_a_device_command(hass: HomeAssistant, ollama: FakeOllama) -> None:
    """A command HA's intents answer reports the intent tier, free of charge."""
    response = await ask_kitty(hass, text="turn on the workshop lights", language="en")

    assert response["response"] == "Turned on the light"
    assert response["route"]["tier"] == "intent"
    assert response["route"]["model"] == "HassTurnOn"
    assert response["route"]["backend"] is None
    assert response["route"]["cost_usd"] == 0
    assert ollama.requests == []


@pytest.mark.usefixtures("agent")
async def test_ask_continues_a_conversation(hass: HomeAssistant, ollama: FakeOllama) -> None:
    """A conversation id of the caller's own keeps the exchange going."""
    ollama.enqueue(ScriptedReply("Noted: the MK4 is in bay 2."), ScriptedReply("Bay 2."))
    first = await ask_kitty(hass, text="The MK4 is in bay 2.", conversation_id="workshop-journal")
    second = await ask_kitty(hass, text="Where is the MK4?", conversation_id="workshop-journal")

    assert first["conversation_id"] == second["conversation_id"] == "workshop-journal"
    assert second["response"] == "Bay 2."
    history = [
        (message["role"], message["content"])
        for message in ollama.requests[-1].body["messages"]
        if message["role"] in ("user", "assistant")
    ]
    assert history == [
        ("user", "The MK4 is in bay 2."),
        ("assistant", "Noted: the MK4 is in bay 2."),
        ("user", "Where is the MK4?"),
    ]


@pytest.mark.usefixtures("agent")
async def test_ask_another_agent_is_refused(hass: HomeAssistant) -> None:
    """Only KITTY's agents can be asked through KITTY's action."""
    with pytest.raises(ServiceValidationError) as raised:
        await ask_kitty(hass, text="Hello", agent_id="conversation.home_assistant")
    assert raised.value.translation_key == "not_kitty_agent"
    assert raised.value.translation_placeholders == {"agent_id": "conversation.home_assistant"}


@pytest.mark.usefixtures("agent")
async def test_ask_refuses_a_conversation_id_the_router_cannot_keep(hass: HomeAssistant) -> None:
    """Ids longer than the router keeps are refused before anything runs."""
    with pytest.raises(vol.Invalid):
        await ask_kitty(hass, text="Hello", conversation_id="x" * 129)


async def test_ask_without_a_loaded_agent(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, closed_url: str, kitty_router: ServiceProcess
) -> None:
    """While KITTY waits for its router there is nobody to ask."""
    entry = kitty_agent_entry(kitty_router, url=closed_url)
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)

    with pytest.raises(ServiceValidationError) as raised:
        await ask_kitty(hass, text="Hello")
    assert raised.value.translation_key == "no_agent"


async def test_ask_fails_when_the_router_is_gone(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, kitty_router: ServiceProcess
) -> None:
    """The action fails with the agent's own error, not with an answer that is one."""
    proxy = TcpProxy(kitty_router.port)
    await proxy.start()
    entry = kitty_agent_entry(kitty_router, url=f"http://127.0.0.1:{proxy.port}")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await set_up_workshop(hass)
    await proxy.cut()

    # A device command is answered still; the router could not record its route.
    response = await ask_kitty(hass, text="turn on the workshop lights")
    assert response["response"] == "Turned on the light"
    assert response["route"] is None

    with pytest.raises(HomeAssistantError) as raised:
        await ask_kitty(hass, text="Why does my nozzle clog?")
    assert raised.value.translation_key == "router_unavailable"
    assert entry.data[CONF_TOKEN] not in str(raised.value)
    assert raised.value.translation_placeholders["url"] == entry.data[CONF_URL]
