"""KITTY's conversation agent against a real router whose models are protocol-faithful fakes.

HA's own intents answer device commands (tier 0) without any model; everything else
streams from the router, which calls the fake Ollama (local) or OpenAI (cloud), while
HA runs the tools the model calls. Remote mode keeps everything read-only.
"""

from typing import Any

from homeassistant.components import conversation
from homeassistant.components.conversation import trace
from homeassistant.components.conversation.agent_manager import async_get_agent
from homeassistant.components.lock import LockState
from homeassistant.const import CONF_LLM_HASS_API, EVENT_CALL_SERVICE, MATCH_ALL, STATE_ON
from homeassistant.core import Context, Event, HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import chat_session, intent
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.kitty.const import CONF_PROFILE
from custom_components.kitty.conversation import REMOTE_MODE_PROMPT
from tests.helpers.fake_llm import FakeOllama, FakeOpenAI, ScriptedError, ScriptedReply
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    SHOP_DOOR,
    WORKSHOP_LIGHTS,
    kitty_agent_entry,
    router_call,
    set_up_workshop,
)
from tests.lib.tcp_proxy import TcpProxy

AGENT = "conversation.kitty"
REMOTE_MODE_SWITCH = "switch.kitty_router_remote_mode"
# What the router tells the user when the cloud could not take over an unsure answer.
CLOUD_UNAVAILABLE = "The cloud models could not be reached, so the local model answered."


pytestmark = pytest.mark.usefixtures("fresh_models")


async def set_up_agent(
    hass: HomeAssistant, router: ServiceProcess, **options: Any
) -> MockConfigEntry:
    """Set up the workshop and KITTY with its agent."""
    await set_up_workshop(hass)
    entry = kitty_agent_entry(router, **options)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    return entry


@pytest.fixture
async def agent(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, kitty_router: ServiceProcess
) -> MockConfigEntry:
    """KITTY with its default agent, in a workshop with a light and a door."""
    return await set_up_agent(hass, kitty_router)


async def ask(hass: HomeAssistant, text: str, conversation_id: str | None = None) -> Any:
    """Say `text` to KITTY, as Assist does."""
    return await conversation.async_converse(hass, text, conversation_id, Context(), agent_id=AGENT)


def speech(result: conversation.ConversationResult) -> str:
    """Return what the user hears."""
    return result.response.speech["plain"]["speech"]


def routes() -> list[dict[str, Any]]:
    """Return the routing decisions in the latest conversation trace."""
    events = trace.async_get_traces()[-1].as_dict()["events"]
    return [
        event["data"]["kitty_route"]
        for event in events
        if event["event_type"] == trace.ConversationTraceEventType.AGENT_DETAIL
        and "kitty_route" in event["data"]
    ]


def chat_requests(fake: FakeOllama | FakeOpenAI) -> list[dict[str, Any]]:
    """Return the bodies of the chat requests a fake received."""
    return [
        request.body
        for request in fake.requests
        if request.path.endswith(("/api/chat", "/chat/completions"))
    ]


def tool_names(body: dict[str, Any]) -> set[str]:
    """Return the names of the tools a model was offered."""
    return {tool["function"]["name"] for tool in body.get("tools") or ()}


async def set_remote_mode(hass: HomeAssistant, on: bool) -> None:
    """Flip KITTY's remote mode switch, as a user or a presence automation does."""
    await hass.services.async_call(
        "switch", "turn_on" if on else "turn_off", {"entity_id": REMOTE_MODE_SWITCH}, blocking=True
    )


def service_calls(hass: HomeAssistant, domain: str) -> list[Event]:
    """Record every service call of `domain` from now on."""
    calls: list[Event] = []
    hass.bus.async_listen(
        EVENT_CALL_SERVICE,
        lambda event: calls.append(event) if event.data["domain"] == domain else None,
    )
    return calls


async def test_device_command_never_reaches_a_model(
    hass: HomeAssistant,
    agent: MockConfigEntry,
    kitty_router: ServiceProcess,
    ollama: FakeOllama,
    openai: FakeOpenAI,
) -> None:
    """Tier 0: HA's own intent turns the light on; no model is asked; the router counts it."""
    result = await ask(hass, "turn on the workshop lights")
    await hass.async_block_till_done()

    assert hass.states.get(WORKSHOP_LIGHTS).state == STATE_ON
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    assert speech(result) == "Turned on the light"
    assert ollama.requests == []
    assert openai.requests == []

    [route] = routes()
    assert route["tier"] == "intent"
    assert route["reason"] == "intent_match"
    assert route["model"] == "HassTurnOn"
    assert route["conversation_id"] == result.conversation_id
    logged = router_call(
        kitty_router, f"/api/routing/logs?tier=intent&conversation_id={result.conversation_id}"
    )
    assert [item["id"] for item in logged["items"]] == [route["id"]]


async def test_question_is_answered_by_the_local_model(
    hass: HomeAssistant, agent: MockConfigEntry, ollama: FakeOllama, openai: FakeOpenAI
) -> None:
    """A question no intent matches goes to the local model with Assist's tools."""
    ollama.enqueue(ScriptedReply("PETG prints well at 240 degrees."))
    deltas: list[dict[str, Any]] = []
    with (
        chat_session.async_get_chat_session(hass) as session,
        conversation.async_get_chat_log(
            hass, session, chat_log_delta_listener=lambda _, delta: deltas.append(delta)
        ),
    ):
        result = await ask(hass, "What temperature suits PETG?", session.conversation_id)

    assert speech(result) == "PETG prints well at 240 degrees."
    assert conversation.async_get_conversation_languages(hass, AGENT) == MATCH_ALL
    # The answer reached the listener (the pipeline's TTS) as it arrived.
    assert "".join(delta.get("content") or "" for delta in deltas) == speech(result)
    [body] = chat_requests(ollama)
    assert body["messages"][0]["role"] == "system"
    assert "You are a voice assistant for Home Assistant." in body["messages"][0]["content"]
    assert body["messages"][-1] == {"role": "user", "content": "What temperature suits PETG?"}
    assert {"intent__HassTurnOn", "homeassistant__GetLiveContext"} <= tool_names(body)
    assert openai.requests == []

    [route] = routes()
    assert route["tier"] == "local"
    assert route["backend"] == "ollama"
    assert route["reason"] == "confident"
    assert route["conversation_id"] == result.conversation_id


async def test_cloud_answer_streams_word_by_word(
    hass: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    kitty_router: ServiceProcess,
    openai: FakeOpenAI,
) -> None:
    """An agent routed to the cloud hears the answer in pieces, before it is complete."""
    await set_up_agent(hass, kitty_router, **{CONF_PROFILE: "kitty-cloud"})
    openai.enqueue(ScriptedReply("Layer adhesion improves with a warmer bed."))
    deltas: list[str] = []
    with (
        chat_session.async_get_chat_session(hass) as session,
        conversation.async_get_chat_log(
            hass,
            session,
            chat_log_delta_listener=lambda _, delta: deltas.append(delta.get("content") or ""),
        ),
    ):
        result = await ask(hass, "How do I fix layer adhesion?", session.conversation_id)

    assert speech(result) == "Layer adhesion improves with a warmer bed."
    pieces = [piece for piece in deltas if piece]
    assert len(pieces) > 1
    assert "".join(pieces) == speech(result)
    [route] = routes()
    assert (route["tier"], route["backend"], route["reason"]) == ("cloud", "gpt", "requested")


async def test_tool_loop_turns_on_the_light(
    hass: HomeAssistant, agent: MockConfigEntry, ollama: FakeOllama
) -> None:
    """The model calls HassTurnOn, HA runs it, and the model answers from the result."""
    ollama.enqueue(
        ScriptedReply(tool_calls=[("intent__HassTurnOn", {"name": "Workshop lights"})]),
        ScriptedReply("Done, the workshop is lit."),
    )
    result = await ask(hass, "It is too dark to solder in the workshop")
    await hass.async_block_till_done()

    assert hass.states.get(WORKSHOP_LIGHTS).state == STATE_ON
    assert speech(result) == "Done, the workshop is lit."
    # HA reports what the tool did, as for any LLM agent.
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    first, second = chat_requests(ollama)
    assert first["messages"][-1]["role"] == "user"
    tool_result = second["messages"][-1]
    assert tool_result["role"] == "tool"
    assert "Workshop lights" in tool_result["content"]
    assert len(routes()) == 2


async def test_notice_is_told(
    hass: HomeAssistant, agent: MockConfigEntry, ollama: FakeOllama, openai: FakeOpenAI
) -> None:
    """When the router answers locally although it wanted the cloud, the user hears why."""
    ollama.enqueue(ScriptedReply("Maybe sand it.", token_logprob=-4.0))
    openai.enqueue(ScriptedError(503, "The engine is currently overloaded."))
    result = await ask(hass, "How should I finish a resin print?")

    assert speech(result) == f"Maybe sand it. {CLOUD_UNAVAILABLE}"
    [route] = routes()
    assert route["reason"] == "cloud_unavailable"
    assert route["notice"] == CLOUD_UNAVAILABLE


async def test_remote_mode_refuses_to_unlock(
    hass: HomeAssistant, agent: MockConfigEntry, ollama: FakeOllama, openai: FakeOpenAI
) -> None:
    """In remote mode a command is recognised but not run, and the user hears why."""
    await set_remote_mode(hass, True)
    lock_calls = service_calls(hass, "lock")
    result = await ask(hass, "unlock the shop door")
    await hass.async_block_till_done()

    assert hass.states.get(SHOP_DOOR).state == LockState.LOCKED
    assert lock_calls == []
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert speech(result) == (
        "Remote mode is on, so I am not changing anything. Turn off remote mode first."
    )
    assert ollama.requests == openai.requests == []
    [route] = routes()
    assert (route["tier"], route["model"]) == ("intent", "HassTurnOff")

    # Back home: the same words unlock the door.
    await set_remote_mode(hass, False)
    await ask(hass, "unlock the shop door")
    await hass.async_block_till_done()
    assert hass.states.get(SHOP_DOOR).state == LockState.UNLOCKED


async def test_remote_mode_still_answers_questions(
    hass: HomeAssistant, agent: MockConfigEntry, ollama: FakeOllama
) -> None:
    """In remote mode state questions are answered locally, as before."""
    await set_remote_mode(hass, True)
    result = await ask(hass, "is the shop door locked?")

    assert result.response.response_type is intent.IntentResponseType.QUERY_ANSWER
    assert speech(result).startswith("Yes")
    assert ollama.requests == []
    [route] = routes()
    assert (route["tier"], route["model"]) == ("intent", "HassGetState")


async def test_remote_mode_model_only_reads(
    hass: HomeAssistant, agent: MockConfigEntry, ollama: FakeOllama
) -> None:
    """The model gets only read-only tools; a call to any other fails and changes nothing."""
    await set_remote_mode(hass, True)
    lock_calls = service_calls(hass, "lock")
    ollama.enqueue(
        ScriptedReply(
            tool_calls=[
                ("homeassistant__GetLiveContext", {}),
                ("intent__HassTurnOff", {"name": "Shop door", "domain": ["lock"]}),
            ]
        ),
        ScriptedReply("Remote mode is on, so the door stays locked."),
    )
    result = await ask(hass, "The courier is waiting at the shop, let him in")
    await hass.async_block_till_done()

    assert hass.states.get(SHOP_DOOR).state == LockState.LOCKED
    assert lock_calls == []
    assert speech(result) == "Remote mode is on, so the door stays locked."
    first, second = chat_requests(ollama)
    offered = tool_names(first)
    assert {"homeassistant__GetLiveContext", "llm__GetDateTime"} <= offered
    assert not {"intent__HassTurnOn", "intent__HassTurnOff"} & offered
    assert REMOTE_MODE_PROMPT in first["messages"][0]["content"]
    live_context, refusal = second["messages"][-2:]
    # Reading still works...
    assert live_context["role"] == "tool"
    assert "Shop door" in live_context["content"]
    assert '"error":false' in live_context["content"].replace(" ", "")
    # ...changing does not.
    assert refusal["role"] == "tool"
    assert "Remote mode is on" in refusal["content"]
    assert "intent__HassTurnOff did not run" in refusal["content"]


async def test_agent_without_tools(
    hass: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    kitty_router: ServiceProcess,
    ollama: FakeOllama,
) -> None:
    """An agent without LLM APIs only talks; in remote mode it is told so as well."""
    entry = await set_up_agent(hass, kitty_router)
    [subentry] = entry.subentries.values()
    hass.config_entries.async_update_subentry(entry, subentry, data={CONF_PROFILE: "kitty-local"})
    await hass.async_block_till_done()
    await set_remote_mode(hass, True)
    ollama.enqueue(ScriptedReply("Hello from the workshop."))
    result = await ask(hass, "Say hello")

    assert speech(result) == "Hello from the workshop."
    [body] = chat_requests(ollama)
    assert "tools" not in body
    assert REMOTE_MODE_PROMPT in body["messages"][0]["content"]
    [route] = routes()
    assert (route["profile"], route["reason"]) == ("kitty-local", "requested")


async def test_agent_with_a_removed_llm_api(
    hass: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    kitty_router: ServiceProcess,
    ollama: FakeOllama,
) -> None:
    """An agent whose LLM API is gone says so instead of asking a model without it."""
    await set_up_agent(hass, kitty_router, **{CONF_LLM_HASS_API: ["retired_api"]})
    result = await ask(hass, "What is on the workbench?")

    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert speech(result) == "Error preparing LLM API"
    assert ollama.requests == []


async def test_stream_that_breaks_off(
    hass: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    kitty_router: ServiceProcess,
    openai: FakeOpenAI,
) -> None:
    """A cloud answer that fails halfway is an error, not half an answer."""
    await set_up_agent(hass, kitty_router, **{CONF_PROFILE: "kitty-cloud"})
    openai.enqueue(ScriptedError(500, "The server had an error.", after_text="First, heat"))
    result = await ask(hass, "How do I change the nozzle?")

    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert speech(result).startswith("The KITTY router could not answer")


async def test_router_down(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, kitty_router: ServiceProcess
) -> None:
    """A router that cannot be reached fails the turn with a translated error, spoken too."""
    proxy = TcpProxy(kitty_router.port)
    await proxy.start()
    await set_up_workshop(hass)
    entry = kitty_agent_entry(kitty_router, url=f"http://127.0.0.1:{proxy.port}")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await proxy.cut()

    # Device commands never needed the router: they still work, unrecorded.
    result = await ask(hass, "turn on the workshop lights")
    await hass.async_block_till_done()
    assert hass.states.get(WORKSHOP_LIGHTS).state == STATE_ON
    assert speech(result) == "Turned on the light"
    assert routes() == [None]

    agent = async_get_agent(hass, AGENT)
    assert isinstance(agent, conversation.ConversationEntity)
    with pytest.raises(HomeAssistantError) as raised:
        await agent.internal_async_process(
            conversation.ConversationInput(
                text="Why does my nozzle clog?",
                context=Context(),
                conversation_id=None,
                device_id=None,
                satellite_id=None,
                language="en",
                agent_id=AGENT,
            )
        )
    assert raised.value.translation_key == "router_unavailable"

    result = await ask(hass, "Why does my nozzle clog?")
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert speech(result).startswith(
        f"The KITTY router at http://127.0.0.1:{proxy.port} is not ready"
    )


async def test_router_refuses_the_turn(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, kitty_router: ServiceProcess
) -> None:
    """An agent routed to a backend the router no longer has hears the router's reason."""
    await set_up_agent(hass, kitty_router, **{CONF_PROFILE: "retired-llama"})
    result = await ask(hass, "Why does my nozzle clog?")

    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert speech(result).startswith("The KITTY router could not answer")
    assert "retired-llama" in speech(result)
