"""KITTY's conversation memory: context that outlives HA's 5-minute chat session."""

from datetime import timedelta
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockUser,
    async_fire_time_changed,
)

from custom_components.kitty.memory import SAVE_DELAY
from tests.helpers.fake_llm import FakeOllama, ScriptedReply
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    kitty_agent_entry,
    set_up_workshop,
)

AGENT = "conversation.kitty"
RECALLED = "Earlier in this conversation (recalled from memory"
SATELLITE = "workshop-satellite-device"


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


async def say(
    hass: HomeAssistant,
    text: str,
    conversation_id: str | None = None,
    device_id: str | None = None,
    user_id: str | None = None,
) -> conversation.ConversationResult:
    """Say `text` to KITTY, as Assist does (from a satellite, as a user)."""
    return await conversation.async_converse(
        hass, text, conversation_id, Context(user_id=user_id), agent_id=AGENT, device_id=device_id
    )


def system_prompt(ollama: FakeOllama) -> str:
    """Return the system prompt the model got last."""
    return ollama.requests[-1].body["messages"][0]["content"]


def session_expires(hass: HomeAssistant, freezer: FrozenDateTimeFactory, after: timedelta) -> None:
    """Let time pass until HA has dropped the chat session (5 minutes of silence)."""
    freezer.tick(after)
    async_fire_time_changed(hass)


@pytest.mark.usefixtures("agent")
async def test_conversation_continues_after_the_session_expired(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, ollama: FakeOllama
) -> None:
    """Coming back to a conversation after 6 minutes, the model still knows what was said."""
    ollama.enqueue(ScriptedReply("Got it, the MK4 prints in PETG."))
    first = await say(hass, "The MK4 is loaded with PETG.")
    await say(hass, "turn on the workshop lights", first.conversation_id)

    session_expires(hass, freezer, timedelta(minutes=6))
    ollama.enqueue(ScriptedReply("PETG."))
    later = await say(hass, "Which filament is in the MK4?", first.conversation_id)

    # HA started a new chat session: nothing of the earlier one is in the chat log...
    assert later.conversation_id != first.conversation_id
    user_turns = [m for m in ollama.requests[-1].body["messages"] if m["role"] == "user"]
    assert user_turns == [{"role": "user", "content": "Which filament is in the MK4?"}]
    # ...but KITTY reminded the model, device command included.
    prompt = system_prompt(ollama)
    assert RECALLED in prompt
    assert (
        "User: The MK4 is loaded with PETG.\n"
        "Assistant: Got it, the MK4 prints in PETG.\n"
        "User: turn on the workshop lights\n"
        "Assistant: Turned on the light"
    ) in prompt


@pytest.mark.usefixtures("agent")
async def test_same_satellite_picks_up_within_a_day(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, ollama: FakeOllama
) -> None:
    """A new conversation from the same satellite recalls the last one, for a day."""
    ollama.enqueue(ScriptedReply("The resin vat needs a new film."))
    await say(hass, "What does the resin printer need?", device_id=SATELLITE)

    session_expires(hass, freezer, timedelta(hours=3))
    await say(hass, "Remind me what it needed", device_id=SATELLITE)
    assert "Assistant: The resin vat needs a new film." in system_prompt(ollama)

    await say(hass, "Who am I talking to?", device_id="kitchen-satellite-device")
    assert RECALLED not in system_prompt(ollama)

    session_expires(hass, freezer, timedelta(hours=25))
    await say(hass, "Remind me what it needed", device_id=SATELLITE)
    assert RECALLED not in system_prompt(ollama)


@pytest.mark.usefixtures("agent")
async def test_same_user_picks_up_on_another_device(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    hass_admin_user: MockUser,
    ollama: FakeOllama,
) -> None:
    """A user who talked to KITTY from the phone continues from the kitchen satellite."""
    ollama.enqueue(ScriptedReply("The laser cutter is booked at 3 pm."))
    await say(hass, "When is the laser cutter booked?", user_id=hass_admin_user.id)

    session_expires(hass, freezer, timedelta(minutes=30))
    await say(hass, "And for how long?", device_id=SATELLITE, user_id=hass_admin_user.id)
    assert "Assistant: The laser cutter is booked at 3 pm." in system_prompt(ollama)


async def test_memory_survives_a_restart(
    hass: HomeAssistant,
    agent: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    hass_storage: dict[str, Any],
    ollama: FakeOllama,
) -> None:
    """The exchanges are written to .storage shortly after a turn and read back at start."""
    ollama.enqueue(ScriptedReply("The spool weighs 1 kg."))
    first = await say(hass, "How heavy is a full spool?", device_id=SATELLITE)
    key = f"kitty.{agent.entry_id}.memory"
    assert key not in hass_storage

    freezer.tick(timedelta(seconds=SAVE_DELAY + 1))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    stored = hass_storage[key]["data"]
    [exchange] = stored["threads"][first.conversation_id]["exchanges"]
    assert (exchange["user"], exchange["assistant"]) == (
        "How heavy is a full spool?",
        "The spool weighs 1 kg.",
    )
    assert stored["latest"] == {f"device:{SATELLITE}": first.conversation_id}

    assert await hass.config_entries.async_reload(agent.entry_id)
    session_expires(hass, freezer, timedelta(minutes=6))
    await say(hass, "And an empty one?", first.conversation_id)
    assert "Assistant: The spool weighs 1 kg." in system_prompt(ollama)


async def test_removed_entry_forgets(
    hass: HomeAssistant, agent: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    """Removing KITTY deletes what it remembered."""
    await say(hass, "Remember the bed is 60 degrees.")
    assert await hass.config_entries.async_unload(agent.entry_id)
    key = f"kitty.{agent.entry_id}.memory"
    assert hass_storage[key]["data"]["threads"]

    await hass.config_entries.async_remove(agent.entry_id)
    assert key not in hass_storage
