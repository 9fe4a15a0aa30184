"""KITTY's CAD side in Home Assistant, against the real CAD service process.

One CAD service (real CadQuery, real PrusaSlicer, SQLite) serves the module, connected
to the module's Mosquitto so its job events reach HA's real MQTT; its model is a
FakeOpenAI that answers a part family. Each test makes the parts it asserts on.
"""

from collections.abc import Iterator
from datetime import datetime
import json
import math
from pathlib import Path
from typing import Any

from homeassistant.components import image
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_TOKEN, CONF_URL, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import llm
import probatio
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
)
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.kitty.const import DOMAIN, SECTION_CAD
from custom_components.kitty.conversation import RemoteModeAPIInstance
from kittyai.catalog import ServiceName
from kittyai.contract import CAD_JOB
from tests.helpers.broker import MosquittoBroker, module_broker
from tests.helpers.fake_llm import FakeOpenAI, ScriptedError
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    cad_entity_id,
    cad_options,
    call_tool,
    llm_context,
    model_designs,
    open_options,
    options_refused_then_stored,
    publish,
    run_cad,
    service_request,
    set_up_kitty,
    suggested,
    wait_for,
    words_asked,
)

BOX = {"length": 40, "width": 30, "height": 10, "hole_diameter": 8}
# 40 x 30 x 10 mm less an 8 mm hole through its height: 12000 - pi * 4² * 10 mm³.
BOX_VOLUME_MM3 = 12000 - math.pi * 16 * 10
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One broker for the module: the CAD service stays connected to it."""
    yield from module_broker(tmp_path_factory)


@pytest.fixture(scope="module")
def cad(
    tmp_path_factory: pytest.TempPathFactory, mqtt_broker: MosquittoBroker, cad_model: FakeOpenAI
) -> Iterator[ServiceProcess]:
    """The real CAD service of the module."""
    yield from run_cad(tmp_path_factory.mktemp("cad"), mqtt_port=mqtt_broker.port, model=cad_model)


@pytest.fixture
async def kitty_cad(
    hass: HomeAssistant,
    router: ServiceProcess,
    cad: ServiceProcess,
    mqtt_entry: MockConfigEntry,
    config_dir: Path,
) -> MockConfigEntry:
    """A loaded KITTY entry whose options name the CAD service."""
    return await set_up_kitty(hass, router, options=cad_options(cad))


async def generate(hass: HomeAssistant, **data: Any) -> dict[str, Any]:
    """Call kitty.generate_cad as an automation does; return its response."""
    response = await hass.services.async_call(
        DOMAIN, "generate_cad", data, blocking=True, return_response=True
    )
    assert response is not None
    return response


def cad_artifact(cad: ServiceProcess, artifact_id: str) -> dict[str, Any]:
    """Return an artifact as the CAD service's own API has it."""
    return json.loads(service_request(cad, f"/api/cad/artifacts/{artifact_id}"))


# -- options flow -------------------------------------------------------------------------


async def submit_cad(hass: HomeAssistant, flow_id: str, **cad: str) -> Any:
    """Submit the options form with these CAD fields."""
    return await hass.config_entries.options.async_configure(flow_id, {SECTION_CAD: cad})


async def loaded_with_cad(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Wait until the entry reloaded with its CAD service."""
    await wait_for(
        hass,
        lambda: entry.state is ConfigEntryState.LOADED and entry.runtime_data.cad is not None,
        "the entry to reload with CAD",
    )


async def test_options_connect_cad(
    hass: HomeAssistant, kitty: MockConfigEntry, cad: ServiceProcess, config_dir: Path
) -> None:
    """A CAD service's URL and token are checked, stored, and the entry reloads with CAD."""
    assert kitty.runtime_data.cad is None
    flow_id = (await open_options(hass, kitty))["flow_id"]

    result = await submit_cad(hass, flow_id, url=f"{cad.url}/", token=cad.token)

    assert result["type"] is FlowResultType.CREATE_ENTRY
    # Stored as it was checked: without the trailing slash.
    assert kitty.options == {SECTION_CAD: {CONF_URL: cad.url, CONF_TOKEN: cad.token}}
    await loaded_with_cad(hass, kitty)
    assert str(kitty.runtime_data.cad.url) == cad.url
    await wait_for(
        hass, lambda: hass.states.get(cad_entity_id(hass, kitty)) is not None, "the image"
    )


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("wrong_token", "invalid_auth"),
        ("router", "not_cad_service"),
        ("closed_port", "cannot_connect"),
        ("not_a_url", "invalid_url"),
    ],
)
async def test_options_errors_then_recover(
    hass: HomeAssistant,
    kitty: MockConfigEntry,
    *,
    router: ServiceProcess,
    cad: ServiceProcess,
    closed_url: str,
    case: str,
    error: str,
) -> None:
    """Each problem shows its error, the URL typed but not the token; fixing it stores CAD."""
    url, token = {
        "wrong_token": (cad.url, "wrong-token"),
        "router": (router.url, router.token),
        "closed_port": (closed_url, cad.token),
        "not_a_url": ("cad.local", cad.token),
    }[case]

    await options_refused_then_stored(
        hass, kitty, SECTION_CAD, cad, url=url, token=token, error=error
    )
    await loaded_with_cad(hass, kitty)


async def test_options_not_a_kitty_service(
    hass: HomeAssistant, kitty: MockConfigEntry, not_kitty_url: str
) -> None:
    """A server that answers, but not as a KITTY service, is no CAD service."""
    flow_id = (await open_options(hass, kitty))["flow_id"]
    result = await submit_cad(hass, flow_id, url=not_kitty_url, token="token")
    assert result["errors"] == {"base": "not_cad_service"}


async def test_options_keep_the_token_then_turn_cad_off(
    hass: HomeAssistant, router: ServiceProcess, cad: ServiceProcess, mqtt_entry: MockConfigEntry
) -> None:
    """An empty token keeps the stored one; an empty URL turns CAD off."""
    entry = await set_up_kitty(hass, router, options=cad_options(cad))
    image_id = cad_entity_id(hass, entry)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    # The stored URL is offered; the token never goes back to the browser.
    assert suggested(result, SECTION_CAD, CONF_URL) == cad.url
    assert suggested(result, SECTION_CAD, CONF_TOKEN) is None

    result = await submit_cad(hass, result["flow_id"], url=cad.url)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == cad_options(cad)

    result = await submit_cad(hass, (await open_options(hass, entry))["flow_id"])
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {}
    await wait_for(
        hass,
        lambda: entry.state is ConfigEntryState.LOADED and entry.runtime_data.cad is None,
        "the entry to reload without CAD",
    )
    assert entry.runtime_data.latest_part is None
    assert hass.states.get(image_id).state == STATE_UNAVAILABLE
    with pytest.raises(ServiceValidationError) as refused:
        await generate(hass, family="box")
    assert refused.value.translation_key == "cad_not_configured"


# -- kitty.generate_cad, the image, the tools ----------------------------------------------


async def test_generate_box(
    hass: HomeAssistant, kitty_cad: MockConfigEntry, cad: ServiceProcess, config_dir: Path
) -> None:
    """A box with a hole comes back measured, sliced, with its preview saved for the frontend."""
    response = await generate(hass, family="box", parameters=BOX, material="petg")

    assert response["state"] == "done"
    assert response["failed_variants"] == []
    [part] = response["artifacts"]
    assert part["family"] == "box"
    assert part["provider"] == "parametric"
    assert part["parameters"] == BOX
    assert part["metrics"]["volume_mm3"] == pytest.approx(BOX_VOLUME_MM3, rel=1e-3)
    assert part["metrics"]["bbox_mm"] == pytest.approx([40, 30, 10], abs=1e-3)
    # PETG: 1.27 g/cm³.
    assert part["metrics"]["mass_g"] == pytest.approx(BOX_VOLUME_MM3 / 1000 * 1.27, rel=1e-3)
    assert part["slice"]["material"] == "petg"
    assert part["slice"]["print_time_s"] > 0
    assert part["slice"]["filament_g"] > 0
    assert {"part.step", "part.stl", "part.3mf", "preview.png", "part.gcode"} <= set(part["files"])

    preview = Path(part["preview_path"])
    assert preview == config_dir / "www" / "kitty" / "cad" / f"{part['id']}.png"
    assert part["preview_url"] == f"/local/kitty/cad/{part['id']}.png"
    data = await hass.async_add_executor_job(preview.read_bytes)
    assert data.startswith(PNG_SIGNATURE)
    assert data == service_request(cad, f"/api/cad/artifacts/{part['id']}/files/preview.png")
    assert cad_artifact(cad, part["id"])["job_id"] == response["job_id"]


async def test_image_shows_the_newest_part(
    hass: HomeAssistant, kitty_cad: MockConfigEntry, cad: ServiceProcess
) -> None:
    """After generate_cad the image is the new part's preview, stamped with its time."""
    image_id = cad_entity_id(hass, kitty_cad)
    await wait_for(hass, lambda: hass.states.get(image_id) is not None, "the image")
    before = hass.states.get(image_id).state

    [part] = (await generate(hass, family="box", parameters={**BOX, "height": 12}))["artifacts"]

    state = hass.states.get(image_id)
    assert state.state != before
    artifact = cad_artifact(cad, part["id"])
    assert state.state == image_last_updated(artifact)
    assert state.attributes["artifact_id"] == part["id"]
    assert state.attributes["family"] == "box"
    assert state.attributes["volume_mm3"] == pytest.approx(part["metrics"]["volume_mm3"])
    shown = await image.async_get_image(hass, image_id)
    assert shown.content_type == "image/png"
    assert shown.content == await hass.async_add_executor_job(Path(part["preview_path"]).read_bytes)


def image_last_updated(artifact: dict[str, Any]) -> str:
    """Return the state an image shows for an artifact: its creation time, in ISO form."""
    return datetime.fromisoformat(artifact["created_at"]).isoformat()


async def test_image_follows_job_events(
    hass: HomeAssistant, kitty_cad: MockConfigEntry, cad: ServiceProcess
) -> None:
    """A part made without HA shows once the service announces its finished job over MQTT."""
    image_id = cad_entity_id(hass, kitty_cad)
    job = json.loads(
        service_request(cad, "/api/cad/generate", {"family": "box", "parameters": {"width": 25}})
    )

    def shows_the_part() -> bool:
        state = hass.states.get(image_id)
        if state is None or state.attributes.get("artifact_id") is None:
            return False
        artifact = cad_artifact(cad, state.attributes["artifact_id"])
        return bool(artifact["job_id"] == job["id"])

    await wait_for(hass, shows_the_part, "the image to show the new part", within=60)
    shown = await image.async_get_image(hass, image_id)
    artifact_id = hass.states.get(image_id).attributes["artifact_id"]
    assert shown.content == service_request(
        cad, f"/api/cad/artifacts/{artifact_id}/files/preview.png"
    )


async def test_refused_and_unconfigured(
    hass: HomeAssistant, kitty: MockConfigEntry, cad: ServiceProcess, config_dir: Path
) -> None:
    """Without CAD, generate_cad says so; the service's refusals name what is wrong."""
    with pytest.raises(ServiceValidationError) as refused:
        await generate(hass, family="box")
    assert refused.value.translation_key == "cad_not_configured"

    hass.config_entries.async_update_entry(kitty, options=cad_options(cad))
    await loaded_with_cad(hass, kitty)

    with pytest.raises(ServiceValidationError) as refused:
        await generate(hass, family="box", parameters={**BOX, "length": -40})
    assert refused.value.translation_key == "cad_rejected"
    assert "length" in str(refused.value)
    assert str(refused.value).startswith("The CAD service refused the request:")

    with pytest.raises(ServiceValidationError) as refused:
        await generate(hass, family="box", parameters={"height": 900})
    assert refused.value.translation_key == "cad_rejected"
    assert "900" in str(refused.value)

    # Nothing says what to make: refused before anything is sent.
    with pytest.raises(probatio.Invalid, match=r"at least one of .*prompt"):
        await generate(hass, material="pla")
    with pytest.raises(ServiceValidationError) as refused:
        await generate(hass, family="box", parameters={"length": {"mm": 3}})
    assert refused.value.translation_key == "cad_invalid_request"


async def test_cad_service_down(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    router: ServiceProcess,
    mqtt_entry: MockConfigEntry,
    closed_url: str,
) -> None:
    """A CAD service that does not answer leaves KITTY loaded, its image unavailable."""
    entry = await set_up_kitty(hass, router, options=cad_options(url=closed_url))
    assert entry.state is ConfigEntryState.LOADED
    image_id = cad_entity_id(hass, entry)
    await wait_for(
        hass, lambda: hass.states.get(image_id).state == STATE_UNAVAILABLE, "the image to fail"
    )
    with pytest.raises(HomeAssistantError) as failed:
        await generate(hass, family="box")
    assert failed.value.translation_key == "cad_unavailable"
    assert closed_url in str(failed.value)
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert diagnostics["cad"]["available"] is False
    assert closed_url in diagnostics["cad"]["last_error"]
    assert diagnostics["cad"]["latest_part"] is None


async def test_cad_token_rejected(
    hass: HomeAssistant, router: ServiceProcess, cad: ServiceProcess, mqtt_entry: MockConfigEntry
) -> None:
    """A CAD token the service no longer takes: a translated error, without the token."""
    options = cad_options(cad)
    options[SECTION_CAD][CONF_TOKEN] = "revoked-token-0123456789"
    entry = await set_up_kitty(hass, router, options=options)
    image_id = cad_entity_id(hass, entry)
    await wait_for(
        hass, lambda: hass.states.get(image_id).state == STATE_UNAVAILABLE, "the image to fail"
    )
    with pytest.raises(HomeAssistantError) as failed:
        await generate(hass, family="box")
    assert failed.value.translation_key == "cad_invalid_auth"
    assert "revoked-token" not in str(failed.value)


async def test_broken_job_events_are_ignored(
    hass: HomeAssistant,
    kitty_cad: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A payload on the job topic that breaks the contract is logged and changes nothing."""
    image_id = cad_entity_id(hass, kitty_cad)
    await wait_for(hass, lambda: hass.states.get(image_id) is not None, "the image")
    before = hass.states.get(image_id)

    await publish(hass, CAD_JOB.topic(ServiceName.CAD), '{"job_id": "j1", "state": "exploded"}')

    await wait_for(hass, lambda: "breaks the KITTY contract" in caplog.text, "the warning")
    assert CAD_JOB.topic(ServiceName.CAD) in caplog.text
    assert hass.states.get(image_id) == before


async def test_lineage_through_the_service(
    hass: HomeAssistant, kitty_cad: MockConfigEntry, cad: ServiceProcess
) -> None:
    """A child made with parent_id is a new part; the parent stays as it was."""
    [parent] = (await generate(hass, family="box", parameters=BOX))["artifacts"]
    parent_before = cad_artifact(cad, parent["id"])

    [child] = (await generate(hass, parent_id=parent["id"], parameters={"height": 20}))["artifacts"]

    assert child["id"] != parent["id"]
    assert child["parent_id"] == parent["id"]
    assert child["parameters"] == {**BOX, "height": 20}
    assert child["metrics"]["bbox_mm"] == pytest.approx([40, 30, 20], abs=1e-3)
    assert cad_artifact(cad, parent["id"]) == parent_before

    shown = await call_tool(hass, "ShowCadArtifact", artifact_id=child["id"])
    assert not shown.error, shown.data
    assert shown.data["lineage"]["parent_id"] == parent["id"]
    assert shown.data["lineage"]["ancestor_ids"] == [parent["id"]]
    assert shown.data["metrics"] == child["metrics"]
    assert shown.data["preview_url"] == child["preview_url"]
    assert "preview_path" not in shown.data
    shown = await call_tool(hass, "ShowCadArtifact", artifact_id=parent["id"])
    assert shown.data["lineage"]["children_ids"] == [child["id"]]
    assert shown.data["lineage"]["parent_id"] is None

    shown = await call_tool(hass, "ShowCadArtifact", artifact_id="no-such-part")
    assert shown.error
    assert shown.data["error"].startswith("The CAD service has no part of that id")


async def test_generate_cad_tool_reads_the_words(
    hass: HomeAssistant, kitty_cad: MockConfigEntry, cad_model: FakeOpenAI
) -> None:
    """The tool hands the words to the CAD service, whose model picks the family."""
    model_designs(cad_model, "box", {"length": 25, "width": 25, "height": 6})

    result = await call_tool(hass, "GenerateCad", prompt="A 25 mm square foot, 6 mm thick")

    assert not result.error, result.data
    [part] = result.data["artifacts"]
    assert part["family"] == "box"
    assert part["metrics"]["volume_mm3"] == pytest.approx(25 * 25 * 6, rel=1e-3)
    assert part["slice"]["print_time_s"] > 0
    assert part["preview_url"] == f"/local/kitty/cad/{part['id']}.png"
    assert "preview_path" not in part
    assert "A 25 mm square foot, 6 mm thick" in words_asked(cad_model)

    result = await call_tool(hass, "GenerateCad", prompt="a box", printer="ender_9")
    assert result.error
    assert "ender_9" in result.data["error"]


async def test_failed_job(
    hass: HomeAssistant, kitty_cad: MockConfigEntry, cad_model: FakeOpenAI
) -> None:
    """A job whose every variant failed fails the action, with the service's reason."""
    cad_model.respond_with(lambda _: ScriptedError(500, "The server had an error."))
    try:
        with pytest.raises(HomeAssistantError) as failed:
            await generate(hass, prompt="A 25 mm square foot")
        result = await call_tool(hass, "GenerateCad", prompt="A 25 mm square foot")
    finally:
        cad_model.respond_with(None)

    assert failed.value.translation_key == "cad_failed"
    assert "HTTP 500" in str(failed.value)
    assert result.error
    assert result.data["error"].startswith("CAD job ")
    assert "made no part" in result.data["error"]


async def test_remote_mode_designs_but_does_not_print(
    hass: HomeAssistant, kitty_cad: MockConfigEntry
) -> None:
    """Remote mode keeps the CAD tools that change nothing in the house, not printing."""
    instance = await llm.async_get_api(hass, DOMAIN, llm_context())
    remote = RemoteModeAPIInstance.of(instance)

    names = [tool.name for tool in remote.tools]
    assert {"GenerateCad", "ShowCadArtifact"} <= set(names)
    assert "SendCadToPrinter" not in names
    with pytest.raises(HomeAssistantError) as refused:
        await remote.async_call_tool(
            llm.ToolInput(
                tool_name="SendCadToPrinter", tool_args={"artifact_id": "a1", "confirm": True}
            )
        )
    assert refused.value.translation_key == "remote_mode_tool_refused"


async def test_diagnostics_redact_the_cad_token(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    kitty_cad: MockConfigEntry,
    cad: ServiceProcess,
) -> None:
    """Diagnostics show the CAD service and its newest part, never its token."""
    [part] = (await generate(hass, family="box", parameters=BOX))["artifacts"]

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, kitty_cad)

    assert cad.token not in json.dumps(diagnostics)
    assert diagnostics["entry"]["options"][SECTION_CAD][CONF_TOKEN] == "**REDACTED**"
    assert diagnostics["cad"]["url"] == cad.url
    assert diagnostics["cad"]["available"] is True
    assert diagnostics["cad"]["latest_part"]["id"] == part["id"]
