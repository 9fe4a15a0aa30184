"""From words to a printing printer: KITTY's CAD service, Home Assistant and OctoPrint.

All real: the CAD service process (CadQuery, PrusaSlicer, SQLite) whose model is a
FakeOpenAI answering a part family, HA with KITTY, and OctoPrint with its Virtual
Printer as a KITTY printer. Every test leaves the printer idle and connected.
"""

from collections.abc import Iterator
from pathlib import Path
import tempfile
from typing import Any

from homeassistant.const import ATTR_DEVICE_ID
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
import probatio
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.kitty.const import DOMAIN
from custom_components.kitty.printer_coordinator import PrinterCoordinator
from tests.helpers.fake_llm import FakeOpenAI
from tests.helpers.octoprint import OctoPrintServer
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    cad_options,
    model_designs,
    run_cad,
    service_request,
    set_up_kitty,
    words_asked,
)
from tests.integration.test_printer_octoprint import (
    PRINTER_NAME,
    add_octoprint,
    call_tool,
    job,
    octoprint_files,
    state,
)

COUPON = {"length": 20, "width": 20, "height": 5}
# As a user types it, with multiplication signs.
COUPON_PROMPT = "a 20 \u00d7 20 \u00d7 5 mm test coupon"


@pytest.fixture(scope="module")
def cad(
    tmp_path_factory: pytest.TempPathFactory, cad_model: FakeOpenAI
) -> Iterator[ServiceProcess]:
    """The real CAD service of the module; HA asks it over HTTP only."""
    yield from run_cad(tmp_path_factory.mktemp("cad"), mqtt_port=None, model=cad_model)


@pytest.fixture
async def printer(
    hass: HomeAssistant,
    *,
    router: ServiceProcess,
    cad: ServiceProcess,
    mqtt_entry: MockConfigEntry,
    idle_octoprint: OctoPrintServer,
    config_dir: Path,
) -> PrinterCoordinator:
    """KITTY with the CAD service and the OctoPrint, added through the printer flow."""
    entry = await set_up_kitty(hass, router, options=cad_options(cad))
    return await add_octoprint(hass, entry, idle_octoprint)


async def generate(hass: HomeAssistant, **data: Any) -> dict[str, Any]:
    """Call kitty.generate_cad as an automation does; return its one part."""
    response = await hass.services.async_call(
        DOMAIN, "generate_cad", data, blocking=True, return_response=True
    )
    assert response is not None
    [part] = response["artifacts"]
    return dict(part)


async def start_print(hass: HomeAssistant, **data: Any) -> dict[str, Any]:
    """Call kitty.start_print and return the printer's status."""
    response = await hass.services.async_call(
        DOMAIN, "start_print", data, blocking=True, return_response=True
    )
    assert response is not None
    return dict(response)


def leftover_gcode(artifact_id: str) -> list[Path]:
    """Return the temporary G-code files of an artifact still on the HA host."""
    return list(Path(tempfile.gettempdir()).glob(f"*/kitty-{artifact_id}.gcode"))


async def test_words_to_a_printing_printer(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    cad: ServiceProcess,
    cad_model: FakeOpenAI,
) -> None:
    """The acceptance test: a sentence becomes a sliced part, and the part prints."""
    model_designs(cad_model, "box", COUPON)

    part = await generate(hass, prompt=COUPON_PROMPT)

    # The words reached the CAD service's model, which chose the coupon.
    assert COUPON_PROMPT in words_asked(cad_model)
    assert part["family"] == "box"
    assert part["metrics"]["bbox_mm"] == pytest.approx([20, 20, 5], abs=1e-3)
    assert part["metrics"]["volume_mm3"] == pytest.approx(2000, rel=1e-3)
    assert "part.gcode" in part["files"]
    assert part["slice"]["print_time_s"] > 0
    assert part["slice"]["filament_g"] > 0
    gcode = service_request(cad, f"/api/cad/artifacts/{part['id']}/files/part.gcode")

    status = await start_print(hass, device_id=printer.device_id, artifact_id=part["id"])

    name = f"kitty-{part['id']}.gcode"
    assert status["state"] == "printing"
    assert status["file"] == name
    octoprint_job = job(idle_octoprint)
    assert octoprint_job["state"] == "Printing"
    assert octoprint_job["job"]["file"]["name"] == name
    # OctoPrint holds the service's G-code, byte for byte.
    stored = idle_octoprint.request("GET", f"/api/files/local/{name}")
    assert stored["size"] == len(gcode)
    assert state(hass, printer, "sensor", "state") == "printing"
    assert state(hass, printer, "sensor", "current_file") == name
    assert leftover_gcode(part["id"]) == []


async def test_send_to_printer_asks_first(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
    cad: ServiceProcess,
) -> None:
    """Without confirm nothing prints and the model is told what to ask; with it, it prints."""
    part = await generate(hass, family="box", parameters=COUPON)

    result = await call_tool(hass, "SendCadToPrinter", artifact_id=part["id"])

    assert not result.error, result.data
    assert result.data["done"] is False
    assert result.data["confirmation_required"] is True
    assert result.data["printer"] == PRINTER_NAME
    assert result.data["print_time_s"] == part["slice"]["print_time_s"]
    assert result.data["filament_g"] == part["slice"]["filament_g"]
    minutes = round(part["slice"]["print_time_s"] / 60)
    assert (
        f"Ask the user to confirm printing part {part['id']} on {PRINTER_NAME}: "
        f"about {minutes} min and {part['slice']['filament_g']:.1f} g of PLA"
    ) in result.data["instruction"]
    assert job(idle_octoprint)["state"] == "Operational"
    assert f"kitty-{part['id']}.gcode" not in octoprint_files(idle_octoprint)

    result = await call_tool(hass, "SendCadToPrinter", artifact_id=part["id"], confirm=True)

    assert not result.error, result.data
    assert result.data["done"] is True
    assert result.data["status"]["state"] == "printing"
    assert job(idle_octoprint)["job"]["file"]["name"] == f"kitty-{part['id']}.gcode"

    # The printer is busy now: the next part is refused, with the printer's reason.
    other = await generate(hass, family="box", parameters={**COUPON, "height": 3})
    result = await call_tool(hass, "SendCadToPrinter", artifact_id=other["id"], confirm=True)
    assert result.error
    assert result.data["error"].startswith(f"{PRINTER_NAME} is busy with a job")


async def test_what_cannot_be_printed(
    hass: HomeAssistant,
    printer: PrinterCoordinator,
    idle_octoprint: OctoPrintServer,
) -> None:
    """Unknown and unsliced parts, and unclear requests, are refused; nothing is uploaded."""
    files_before = octoprint_files(idle_octoprint)
    device = {ATTR_DEVICE_ID: printer.device_id}
    unsliced = await generate(hass, family="box", parameters=COUPON, slice=False)
    assert unsliced["slice"] is None
    assert "part.gcode" not in unsliced["files"]

    with pytest.raises(ServiceValidationError) as refused:
        await start_print(hass, **device, artifact_id=unsliced["id"])
    assert refused.value.translation_key == "artifact_not_sliced"
    assert unsliced["id"] in str(refused.value)

    with pytest.raises(ServiceValidationError) as refused:
        await start_print(hass, **device, artifact_id="no-such-part")
    assert refused.value.translation_key == "unknown_artifact"

    with pytest.raises(probatio.Invalid, match="either a file or an artifact_id"):
        await start_print(hass, **device, artifact_id=unsliced["id"], file="/tmp/x.gcode")
    with pytest.raises(probatio.Invalid, match=r"at least one of \[.file., .artifact_id.\]"):
        await start_print(hass, **device)

    result = await call_tool(hass, "SendCadToPrinter", artifact_id=unsliced["id"])
    assert result.error
    assert result.data["error"] == f"Part {unsliced['id']} was not sliced, so it cannot be printed."

    assert job(idle_octoprint)["state"] == "Operational"
    assert octoprint_files(idle_octoprint) == files_before
