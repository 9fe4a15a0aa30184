"""The print monitor in Home Assistant, on a real OctoPrint whose webcam shows synthetic prints.

OctoPrint's snapshot URL points at a camera on 127.0.0.1 that answers each request
with the next frame of a `tests/helpers/frames.py` print. The monitor's snapshots
are taken at its interval; the tests move Home Assistant's clock one interval at a
time instead of waiting, while the Virtual Printer runs its job in real time.
"""

from collections.abc import Iterator
from datetime import timedelta
import json
import logging
from pathlib import Path
from typing import Any

from homeassistant.components import persistent_notification
from homeassistant.components.camera import DOMAIN as CAMERA_DOMAIN
from homeassistant.const import ATTR_DEVICE_ID, CONF_API_KEY, CONF_URL, STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)

from custom_components.kitty.const import (
    CONF_DETECTOR,
    CONF_INTERVAL,
    CONF_OBICO_URL,
    CONF_SENSITIVITY,
    CONF_WATCH,
    DOMAIN,
    EVENT_PRINT_FAILURE,
    SECTION_MONITOR,
)
from custom_components.kitty.printer_coordinator import PrinterCoordinator
from kittyai.printwatch import DEFAULT_INTERVAL_S, WatchSettings
from tests.helpers.frames import WARMUP_FRAMES, Scenario, generate
from tests.helpers.gcode import write_timed_gcode
from tests.helpers.octoprint import SNAPSHOT_URL, STREAM_PATH, OctoPrintServer
from tests.integration.common import wait_for
from tests.integration.conftest import FrameCamera
from tests.integration.test_printer_octoprint import (
    call,
    configure,
    entity_id,
    job,
    loaded_printer,
    set_webcam,
    start_octoprint_flow,
    state,
)

# Spaghetti must be paused within this many frames of its start (4 minutes at 10 s).
MAX_FRAMES_TO_PAUSE = 25
FRAMES = 72
ONSET = 36
# Long enough for every frame of a test; the fixture cancels it afterwards.
JOB_SECONDS = 300


@pytest.fixture
def media(hass: HomeAssistant, tmp_path: Path) -> Path:
    """Home Assistant's media folder, where the evidence goes."""
    folder = tmp_path / "media"
    hass.config.media_dirs = {"local": str(folder)}
    return folder


@pytest.fixture
def webcam(idle_octoprint: OctoPrintServer, frame_camera: FrameCamera) -> Iterator[FrameCamera]:
    """OctoPrint's webcam, pointed at the synthetic camera while the test runs."""
    set_webcam(idle_octoprint, STREAM_PATH, frame_camera.url)
    yield frame_camera
    set_webcam(idle_octoprint, STREAM_PATH, SNAPSHOT_URL)


async def add_watched_printer(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    octoprint: OctoPrintServer,
    **monitor: Any,
) -> PrinterCoordinator:
    """Add the OctoPrint with its monitor on, watching its own webcam."""
    flow_id = await start_octoprint_flow(hass, entry)
    result = await configure(
        hass,
        flow_id,
        {
            CONF_URL: octoprint.url,
            CONF_API_KEY: octoprint.api_key,
            SECTION_MONITOR: {CONF_WATCH: True, **monitor},
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    printer = await loaded_printer(hass, entry)
    await wait_for(
        hass,
        lambda: (
            er.async_get(hass).async_get_entity_id(
                CAMERA_DOMAIN, DOMAIN, f"{printer.unique_id}_webcam"
            )
            is not None
        ),
        "the printer's camera",
    )
    return printer


async def start_job(hass: HomeAssistant, printer: PrinterCoordinator, prints: Path) -> None:
    """Start a long job on the printer through kitty.start_print."""
    gcode = write_timed_gcode(prints / "watched.gcode", JOB_SECONDS)
    await call(hass, "start_print", {ATTR_DEVICE_ID: printer.device_id, "file": str(gcode)})


async def next_frame(hass: HomeAssistant, interval_s: float = DEFAULT_INTERVAL_S) -> None:
    """Move the clock one snapshot interval on, and let the monitor judge the frame."""
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=interval_s))
    await hass.async_block_till_done(wait_background_tasks=True)


def failure_state(hass: HomeAssistant, printer: PrinterCoordinator) -> tuple[str, str]:
    """Return the states of the failure binary sensor and the score sensor."""
    return (
        state(hass, printer, "binary_sensor", "failure_detected"),
        state(hass, printer, "sensor", "failure_score"),
    )


async def test_spaghetti_is_paused_with_evidence(
    hass: HomeAssistant,
    kitty: MockConfigEntry,
    *,
    idle_octoprint: OctoPrintServer,
    webcam: FrameCamera,
    prints: Path,
    media: Path,
) -> None:
    """A print that turns to spaghetti is paused soon after, never cancelled, with evidence."""
    spaghetti = generate(Scenario.SPAGHETTI, seed=0, frames=FRAMES, onset=ONSET)
    webcam.frames = [frame.image for frame in spaghetti.frames]
    events = async_capture_events(hass, EVENT_PRINT_FAILURE)
    printer = await add_watched_printer(hass, kitty, idle_octoprint)
    assert failure_state(hass, printer) == (STATE_OFF, "unknown")

    await start_job(hass, printer, prints)
    while not events and webcam.served < FRAMES:
        await next_frame(hass)

    paused_at = webcam.served - 1
    assert ONSET <= paused_at <= ONSET + MAX_FRAMES_TO_PAUSE, f"paused at frame {paused_at}"
    assert job(idle_octoprint)["state"] == "Paused"
    assert state(hass, printer, "sensor", "state") == "paused"
    [event] = events
    data = event.data
    assert set(data) == {"device_id", "printer", "score", "reason", "evidence", "record"}
    assert data["device_id"] == printer.device_id
    assert data["printer"] == printer.name
    assert WatchSettings().pause_level <= data["score"] <= 1
    assert "strands" in data["reason"]
    evidence, record = Path(data["evidence"]), Path(data["record"])
    assert await hass.async_add_executor_job(evidence.read_bytes) == (
        spaghetti.frames[paused_at].image
    )
    assert evidence.is_relative_to(media / "kitty" / "print_failures")
    history = json.loads(await hass.async_add_executor_job(record.read_text))
    assert history["job"] == "watched.gcode"
    assert history["trigger"] == paused_at
    failure, score = failure_state(hass, printer)
    assert failure == STATE_ON
    assert float(score) == pytest.approx(data["score"] * 100, abs=0.01)
    [notification] = [
        n
        for key, n in persistent_notification._async_get_or_create_notifications(hass).items()
        if key.startswith("kitty_print_failure")
    ]
    assert printer.name in notification["message"]
    assert str(evidence.parent) in notification["message"]
    assert f"{data['score']:.0%}" in notification["message"]

    # Paused, the printer is not watched: no more snapshots, and the job is never cancelled.
    served = webcam.served
    for _ in range(3):
        await next_frame(hass)
    assert webcam.served == served
    assert job(idle_octoprint)["state"] == "Paused"

    # Resumed by the user: the failure is cleared, the watch learns the scene again.
    await call(hass, "resume_print", {ATTR_DEVICE_ID: printer.device_id})
    assert failure_state(hass, printer)[0] == STATE_OFF
    await next_frame(hass)
    assert webcam.served == served + 1
    assert job(idle_octoprint)["state"] == "Printing"
    await call(hass, "cancel_print", {ATTR_DEVICE_ID: printer.device_id})
    assert failure_state(hass, printer) == (STATE_OFF, "unknown")


async def test_good_print_goes_on(
    hass: HomeAssistant,
    kitty: MockConfigEntry,
    *,
    idle_octoprint: OctoPrintServer,
    webcam: FrameCamera,
    prints: Path,
    media: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A good print is never paused; a camera that is down for a while is logged once."""
    good = generate(Scenario.GOOD, seed=1, frames=WARMUP_FRAMES + 25)
    webcam.frames = [frame.image for frame in good.frames]
    webcam.fail_first = 3
    events = async_capture_events(hass, EVENT_PRINT_FAILURE)
    interval = 2
    printer = await add_watched_printer(
        hass, kitty, idle_octoprint, **{CONF_INTERVAL: interval, CONF_SENSITIVITY: 1.0}
    )
    # Its warm-up lasts five minutes, whatever the interval.
    monitor = kitty.runtime_data.monitors[printer.subentry.subentry_id]
    assert monitor.settings.interval_s == interval

    await start_job(hass, printer, prints)
    with caplog.at_level(logging.INFO):
        while webcam.served < len(good.frames):
            await next_frame(hass, interval)

    assert caplog.text.count("skips snapshots") == 1
    assert caplog.text.count("gets snapshots again") == 1
    assert not events
    assert job(idle_octoprint)["state"] == "Printing"
    failure, score = failure_state(hass, printer)
    assert failure == STATE_OFF
    assert 0 <= float(score) < WatchSettings().warn_level * 100
    assert not await hass.async_add_executor_job(media.exists)
    await call(hass, "cancel_print", {ATTR_DEVICE_ID: printer.device_id})


async def test_monitor_off_has_no_entities(
    hass: HomeAssistant, kitty: MockConfigEntry, idle_octoprint: OctoPrintServer
) -> None:
    """With the monitor off, the printer has no failure entities."""
    flow_id = await start_octoprint_flow(hass, kitty)
    result = await configure(
        hass,
        flow_id,
        {
            CONF_URL: idle_octoprint.url,
            CONF_API_KEY: idle_octoprint.api_key,
            SECTION_MONITOR: {CONF_WATCH: False},
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    printer = await loaded_printer(hass, kitty)
    assert not kitty.runtime_data.monitors
    assert hass.states.get(entity_id(hass, printer, "sensor", "state")) is not None
    registry = er.async_get(hass)
    assert (
        registry.async_get_entity_id("sensor", DOMAIN, f"{printer.unique_id}_failure_score") is None
    )


async def test_obico_url_is_checked(
    hass: HomeAssistant, kitty: MockConfigEntry, idle_octoprint: OctoPrintServer
) -> None:
    """The Obico detector needs a URL: when adding, pairing and reconfiguring."""
    keys = {CONF_URL: idle_octoprint.url, CONF_API_KEY: idle_octoprint.api_key}
    flow_id = await start_octoprint_flow(hass, kitty)
    result = await configure(hass, flow_id, {**keys, SECTION_MONITOR: {CONF_DETECTOR: "obico"}})
    assert result["errors"] == {"base": "obico_url_required"}
    # Without a key, the URL is checked before OctoPrint is asked for one.
    result = await configure(
        hass,
        flow_id,
        {CONF_URL: idle_octoprint.url, SECTION_MONITOR: {CONF_DETECTOR: "obico"}},
    )
    assert result["errors"] == {"base": "obico_url_required"}
    result = await configure(
        hass,
        flow_id,
        {**keys, SECTION_MONITOR: {CONF_DETECTOR: "obico", CONF_OBICO_URL: "obico.local"}},
    )
    assert result["errors"] == {"base": "invalid_url"}
    result = await configure(
        hass,
        flow_id,
        {
            **keys,
            SECTION_MONITOR: {CONF_DETECTOR: "obico", CONF_OBICO_URL: "http://127.0.0.1:3333/"},
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    printer = await loaded_printer(hass, kitty)
    monitor = kitty.runtime_data.monitors[printer.subentry.subentry_id]
    assert monitor.settings.obico_url == "http://127.0.0.1:3333"

    # Reconfigured: the stored sections are offered, a bad URL is refused, then the change is kept.
    subentry_id = printer.subentry.subentry_id
    result = await kitty.start_subentry_reconfigure_flow(hass, subentry_id)
    result = await configure(
        hass,
        result["flow_id"],
        {CONF_URL: idle_octoprint.url, SECTION_MONITOR: {CONF_DETECTOR: "obico"}},
    )
    assert result["errors"] == {"base": "obico_url_required"}
    result = await configure(
        hass,
        result["flow_id"],
        {
            CONF_URL: idle_octoprint.url,
            SECTION_MONITOR: {CONF_DETECTOR: "vision_local", CONF_INTERVAL: 5},
        },
    )
    assert result["reason"] == "reconfigure_successful"
    printer = await loaded_printer(hass, kitty)
    monitor = kitty.runtime_data.monitors[subentry_id]
    assert monitor.settings.detector == "vision_local"
    assert monitor.settings.interval_s == 5
    assert kitty.subentries[subentry_id].data[CONF_API_KEY] == idle_octoprint.api_key
