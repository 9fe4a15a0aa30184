"""KITTY's conversation agents as config subentries: add, reconfigure, defaults, migration."""

from collections.abc import Iterator
import json
from pathlib import Path
from typing import Any

from homeassistant.config_entries import SOURCE_RECONFIGURE, SOURCE_USER, ConfigEntryState
from homeassistant.const import CONF_LLM_HASS_API, CONF_NAME, CONF_PROMPT, CONF_TOKEN, CONF_URL
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult, FlowResultType
from homeassistant.helpers import device_registry as dr, entity_registry as er, llm
from homeassistant.helpers.selector import SelectSelector
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    get_schema_suggested_value,
)

from custom_components.kitty.const import (
    CONF_PROFILE,
    DEFAULT_CONVERSATION_NAME,
    DOMAIN,
    PROFILES,
    SUBENTRY_CONVERSATION,
)
from kittyai.catalog import ServiceName
from tests.helpers.services import ServiceProcess
from tests.integration.common import kitty_agent_entry, kitty_entry, run_router, wait_for

EN: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "custom_components/kitty/translations/en.json").read_text()
)
# Entries that end up loaded need HA's MQTT.
with_mqtt = pytest.mark.usefixtures("mqtt_entry")

BACKENDS = [
    {"name": "workshop-llama", "kind": "ollama", "url": "http://127.0.0.1:9", "model": "llama3.2"},
    {
        "name": "gpt",
        "kind": "openai",
        "url": "http://127.0.0.1:9/v1",
        "model": "gpt-5-mini",
        "api_key": "sk-test-0123456789",
    },
]


@pytest.fixture(scope="module")
def router_with_backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """Run a real router that knows a local and a cloud backend (never called here)."""
    yield from run_router(tmp_path_factory.mktemp("router"), backends=BACKENDS)


def options_of(result: FlowResult, key: str) -> list[Any]:
    """Return the options a select field of a form offers."""
    for schema_key, validator in result["data_schema"].schema.items():
        if schema_key == key:
            assert isinstance(validator, SelectSelector)
            return list(validator.config["options"])
    raise AssertionError(f"the form has no field {key}")


async def start_add_agent(hass: HomeAssistant, entry: MockConfigEntry) -> FlowResult:
    """Open the form that adds a conversation agent to `entry`."""
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_CONVERSATION), context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    return result


@with_mqtt
async def test_new_entry_comes_with_an_agent(
    hass: HomeAssistant,
    router: ServiceProcess,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Setting KITTY up gives Assist an agent named KITTY that can control the home."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: router.url, CONF_TOKEN: router.token}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    entry = result["result"]
    [subentry] = entry.subentries.values()
    assert subentry.subentry_type == SUBENTRY_CONVERSATION
    assert subentry.title == DEFAULT_CONVERSATION_NAME
    assert dict(subentry.data) == {
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
        CONF_PROMPT: llm.DEFAULT_INSTRUCTIONS_PROMPT,
        CONF_PROFILE: "kitty-auto",
    }
    await wait_for(hass, lambda: entry.state is ConfigEntryState.LOADED, "the entry to load")

    entity_id = entity_registry.async_get_entity_id("conversation", DOMAIN, subentry.subentry_id)
    assert entity_id == "conversation.kitty"
    # Assist shows whether an agent may control the home from this feature.
    assert hass.states.get(entity_id).attributes["supported_features"] == 1
    device = device_registry.async_get(entity_registry.async_get(entity_id).device_id)
    assert device.name == DEFAULT_CONVERSATION_NAME
    assert device.model == "kitty-auto"
    router_device = device_registry.async_get_device_by_identifier(
        (DOMAIN, f"{entry.unique_id}_{ServiceName.ROUTER}"), entry.entry_id
    )
    assert device.via_device_id == router_device.id


async def test_add_agent_offers_the_routers_profiles_and_backends(
    hass: HomeAssistant, router_with_backends: ServiceProcess
) -> None:
    """The routing choices are what the router serves: its profiles, then its backends."""
    entry = kitty_agent_entry(router_with_backends)
    entry.add_to_hass(hass)
    result = await start_add_agent(hass, entry)

    assert options_of(result, CONF_PROFILE) == [*PROFILES, "workshop-llama", "gpt"]
    assert get_schema_suggested_value(result["data_schema"].schema, CONF_PROFILE) == "kitty-auto"
    assert {"value": llm.LLM_API_ASSIST, "label": "Assist"} in options_of(result, CONF_LLM_HASS_API)
    schema = result["data_schema"].schema
    assert get_schema_suggested_value(schema, CONF_LLM_HASS_API) == [llm.LLM_API_ASSIST]
    assert get_schema_suggested_value(schema, CONF_PROMPT) == llm.DEFAULT_INSTRUCTIONS_PROMPT

    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {
            CONF_NAME: "Workshop",
            CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
            CONF_PROMPT: "You run {{ ha_name }}'s workshop.",
            CONF_PROFILE: "workshop-llama",
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Workshop"
    assert result["data"] == {
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
        CONF_PROMPT: "You run {{ ha_name }}'s workshop.",
        CONF_PROFILE: "workshop-llama",
    }
    assert len(entry.subentries) == 2


async def test_add_agent_while_router_is_down(hass: HomeAssistant, closed_url: str) -> None:
    """Without the router the three profiles are offered; an agent without tools is kept so."""
    entry = MockConfigEntry(
        domain=DOMAIN, data={CONF_URL: closed_url, CONF_TOKEN: "token"}, minor_version=2
    )
    entry.add_to_hass(hass)
    result = await start_add_agent(hass, entry)
    assert options_of(result, CONF_PROFILE) == list(PROFILES)

    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {CONF_NAME: "Chat only", CONF_LLM_HASS_API: [], CONF_PROFILE: "kitty-local"},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    # No API key at all, as Home Assistant's own agents store "no tools".
    assert result["data"] == {CONF_PROFILE: "kitty-local"}


@with_mqtt
async def test_reconfigure_agent(
    hass: HomeAssistant,
    router_with_backends: ServiceProcess,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Changing an agent reloads it with the new routing; without tools it cannot control."""
    entry = kitty_agent_entry(router_with_backends)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    [subentry] = entry.subentries.values()

    result = await entry.start_subentry_reconfigure_flow(hass, subentry.subentry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    schema = result["data_schema"].schema
    # The name is the device's to change, not the form's.
    assert CONF_NAME not in schema
    # Loaded, KITTY offers its own tools next to Assist's.
    assert {"value": DOMAIN, "label": "KITTY"} in options_of(result, CONF_LLM_HASS_API)
    assert get_schema_suggested_value(schema, CONF_PROFILE) == "kitty-auto"

    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {CONF_PROMPT: "Answer in one sentence.", CONF_PROFILE: "gpt"},
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert dict(entry.subentries[subentry.subentry_id].data) == {
        CONF_PROMPT: "Answer in one sentence.",
        CONF_PROFILE: "gpt",
    }
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    entity_id = entity_registry.async_get_entity_id("conversation", DOMAIN, subentry.subentry_id)
    assert hass.states.get(entity_id).attributes["supported_features"] == 0
    device = device_registry.async_get(entity_registry.async_get(entity_id).device_id)
    assert device.model == "gpt"


async def test_reconfigure_shows_what_is_set(
    hass: HomeAssistant, router_with_backends: ServiceProcess
) -> None:
    """A backend the router dropped stays selectable; an API that is gone is not suggested."""
    entry = kitty_agent_entry(
        router_with_backends,
        **{CONF_LLM_HASS_API: [llm.LLM_API_ASSIST, "retired_api"], CONF_PROFILE: "old-llama"},
    )
    entry.add_to_hass(hass)
    [subentry] = entry.subentries.values()

    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_CONVERSATION),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": subentry.subentry_id},
    )
    schema = result["data_schema"].schema
    assert options_of(result, CONF_PROFILE) == [*PROFILES, "workshop-llama", "gpt", "old-llama"]
    assert get_schema_suggested_value(schema, CONF_PROFILE) == "old-llama"
    assert get_schema_suggested_value(schema, CONF_LLM_HASS_API) == [llm.LLM_API_ASSIST]


def test_agent_form_is_translated() -> None:
    """Every field of both agent forms has a label and a description, every profile a name."""
    flow = EN["config_subentries"][SUBENTRY_CONVERSATION]
    fields = {CONF_LLM_HASS_API, CONF_PROMPT, CONF_PROFILE}
    for step, expected in (("user", fields | {CONF_NAME}), ("reconfigure", fields)):
        assert set(flow["step"][step]["data"]) == expected
        assert set(flow["step"][step]["data_description"]) == expected - {CONF_NAME}
    assert set(flow["initiate_flow"]) == {"user", "reconfigure"}
    assert set(EN["selector"][CONF_PROFILE]["options"]) == set(PROFILES)


@with_mqtt
async def test_entry_from_before_agents_gets_one(
    hass: HomeAssistant, router: ServiceProcess, entity_registry: er.EntityRegistry
) -> None:
    """An entry made by KITTY 1.1 (no subentries) gets the default agent when it loads."""
    entry = kitty_entry(router)
    assert (entry.version, entry.minor_version) == (1, 1)
    assert not entry.subentries
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)

    assert entry.minor_version == 2
    [subentry] = entry.subentries.values()
    assert subentry.subentry_type == SUBENTRY_CONVERSATION
    assert subentry.data[CONF_PROFILE] == "kitty-auto"
    entity_id = entity_registry.async_get_entity_id("conversation", DOMAIN, subentry.subentry_id)
    assert hass.states.get(entity_id) is not None
