"""KITTY's AI Task entity, through a real router whose one model is a FakeOpenAI."""

from collections.abc import Iterator
import json
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr, entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.kitty.const import DOMAIN
from kittyai.catalog import ServiceName
from tests.helpers.fake_llm import FakeOpenAI, ScriptedError, ScriptedReply
from tests.helpers.services import ServiceProcess
from tests.integration.common import run_router, served, set_up_kitty

CAD_SPEC = {"family": "box", "parameters": {"length": 20, "width": 20, "height": 5}}
# The structure an automation gives in YAML: each field with its selector.
CAD_SPEC_STRUCTURE = {
    "family": {"description": "A part family", "required": True, "selector": {"text": {}}},
    "parameters": {"description": "Its parameters in mm", "selector": {"object": {}}},
}


@pytest.fixture(scope="module")
def model() -> Iterator[FakeOpenAI]:
    """The router's one model: a local OpenAI-compatible server."""
    yield from served(FakeOpenAI())


@pytest.fixture(scope="module")
def task_router(
    tmp_path_factory: pytest.TempPathFactory, model: FakeOpenAI
) -> Iterator[ServiceProcess]:
    """A real router asking only `model`, without an answer cache."""
    yield from run_router(
        tmp_path_factory.mktemp("router"),
        backends=[
            {
                "name": "shop",
                "kind": "openai_compatible",
                "url": model.url,
                "model": "qwen3-4b",
                "max_retries": 0,
            }
        ],
        cache={"enabled": False},
    )


@pytest.fixture
async def task_entity(
    hass: HomeAssistant,
    task_router: ServiceProcess,
    mqtt_entry: MockConfigEntry,
    model: FakeOpenAI,
) -> str:
    """Return the AI Task entity of a loaded KITTY entry; the model was asked nothing."""
    entry = await set_up_kitty(hass, task_router)
    model.requests.clear()
    entity_id = er.async_get(hass).async_get_entity_id(
        "ai_task", DOMAIN, f"{entry.unique_id}_ai_task"
    )
    assert entity_id is not None
    return entity_id


async def generate_data(hass: HomeAssistant, **data: Any) -> dict[str, Any]:
    """Run ai_task.generate_data as an automation does; return its response."""
    response = await hass.services.async_call(
        "ai_task", "generate_data", data, blocking=True, return_response=True
    )
    assert response is not None
    return dict(response)


async def test_structured_cad_spec(
    hass: HomeAssistant, task_entity: str, model: FakeOpenAI
) -> None:
    """A structure becomes the router's json_schema response format; the JSON comes back."""
    model.respond_with(lambda _: ScriptedReply(json.dumps(CAD_SPEC)))

    response = await generate_data(
        hass,
        task_name="CAD spec",
        entity_id=task_entity,
        instructions="Choose a part family and parameters for a 20 x 20 x 5 mm test coupon.",
        structure=CAD_SPEC_STRUCTURE,
    )

    assert response["data"] == CAD_SPEC
    [request] = model.requests
    format_ = request.body["response_format"]
    assert format_["type"] == "json_schema"
    assert format_["json_schema"]["name"] == "cad_spec"
    schema = format_["json_schema"]["schema"]
    assert set(schema["properties"]) == {"family", "parameters"}
    assert schema["required"] == ["family"]
    assert "20 x 20 x 5 mm test coupon" in request.body["messages"][-1]["content"]


async def test_text_task(hass: HomeAssistant, task_entity: str, model: FakeOpenAI) -> None:
    """Without a structure the answer is the model's text, and no format is asked for."""
    model.respond_with(lambda _: ScriptedReply("Print it in PETG at 0.2 mm layers."))

    response = await generate_data(
        hass, task_name="Advice", entity_id=task_entity, instructions="How should I print a hook?"
    )

    assert response["data"] == "Print it in PETG at 0.2 mm layers."
    assert "response_format" not in model.requests[0].body
    state = hass.states.get(task_entity)
    assert state is not None
    assert state.state != "unknown"
    # The entity is on the router's device.
    registry_entry = er.async_get(hass).async_get(task_entity)
    assert registry_entry is not None
    device = dr.async_get(hass).async_get(registry_entry.device_id)
    assert device is not None
    assert device.name == "KITTY Router"
    assert ServiceName.ROUTER in next(iter(device.identifiers))[1]


async def test_answer_that_is_no_json(
    hass: HomeAssistant, task_entity: str, model: FakeOpenAI
) -> None:
    """A structured task whose answer is no JSON fails with a translated error."""
    model.respond_with(lambda _: ScriptedReply("Sure! A box, 20 mm on each side."))

    with pytest.raises(HomeAssistantError) as failed:
        await generate_data(
            hass,
            task_name="CAD spec",
            entity_id=task_entity,
            instructions="Choose a part family.",
            structure=CAD_SPEC_STRUCTURE,
        )

    assert failed.value.translation_key == "ai_task_not_json"
    assert str(failed.value) == (
        "The answer to the task CAD spec is no JSON, so it does not fit the structure asked for"
    )


async def test_model_fails(hass: HomeAssistant, task_entity: str, model: FakeOpenAI) -> None:
    """A model that fails is the router's translated error."""
    model.respond_with(lambda _: ScriptedError(500, "The server had an error."))

    with pytest.raises(HomeAssistantError) as failed:
        await generate_data(
            hass, task_name="Advice", entity_id=task_entity, instructions="Anything?"
        )

    assert failed.value.translation_key == "router_error"
    assert str(failed.value).startswith("The KITTY router could not answer:")
