"""The print monitor: a printer's camera watched while it prints, failing prints paused.

While the printer prints, a snapshot is taken from the chosen camera every
interval and judged by the job's `PrintWatch`. When the watch reaches its pause
level, KITTY pauses the printer (never cancels: the part stays, a person decides),
keeps the evidence, fires `kitty_print_failure` and leaves a notification. At the
warn level it only notifies, once per job.

The evidence goes to Home Assistant's media folder, `kitty/print_failures/<printer>/
<time>/`: the user finds it under Media → My media, behind Home Assistant's login.
It is not put under `www/`, which Home Assistant serves to anyone without a login.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
import logging
from pathlib import Path
from typing import Any, Self

from homeassistant.components import camera, persistent_notification
from homeassistant.components.camera import DOMAIN as CAMERA_DOMAIN
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_TOKEN, CONF_URL
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er, translation
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.helpers.network import NoURLAvailableError, get_url
from homeassistant.util import dt as dt_util, slugify

from kittyai.printers.base import PrinterState, PrinterStatus
from kittyai.printwatch import (
    DEFAULT_INTERVAL_S,
    Detector,
    DetectorError,
    Evidence,
    HeuristicDetector,
    Level,
    ObicoDetector,
    PrintWatch,
    VisionDetector,
    WatchResult,
    WatchSettings,
)

from .const import (
    CONF_CAMERA,
    CONF_DETECTOR,
    CONF_INTERVAL,
    CONF_OBICO_URL,
    CONF_SENSITIVITY,
    CONF_WATCH,
    DEFAULT_SENSITIVITY,
    DETECTOR_HEURISTIC,
    DETECTOR_OBICO,
    DETECTOR_VISION_AUTO,
    DETECTOR_VISION_LOCAL,
    DOMAIN,
    EVENT_PRINT_FAILURE,
    PROFILE_AUTO,
    PROFILE_LOCAL,
    SECTION_MONITOR,
)
from .jobs import JobEvent, job_event
from .printer_coordinator import PrinterCoordinator

_LOGGER = logging.getLogger(__name__)

# The routing profile each vision detector asks KITTY's router for.
VISION_PROFILES = {DETECTOR_VISION_LOCAL: PROFILE_LOCAL, DETECTOR_VISION_AUTO: PROFILE_AUTO}
# Where the evidence goes, below the media folder.
EVIDENCE_FOLDER = Path("kitty", "print_failures")


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorSettings:
    """A printer's print monitor, as its subentry configures it."""

    watch: bool = True
    # None: the printer's own KITTY camera.
    camera: str | None = None
    interval_s: float = DEFAULT_INTERVAL_S
    sensitivity: float = DEFAULT_SENSITIVITY
    detector: str = DETECTOR_HEURISTIC
    obico_url: str | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Self:
        """Return the settings a printer subentry's data holds; defaults where it holds none."""
        options = data.get(SECTION_MONITOR, {})
        return cls(
            watch=options.get(CONF_WATCH, True),
            camera=options.get(CONF_CAMERA) or None,
            interval_s=float(options.get(CONF_INTERVAL, DEFAULT_INTERVAL_S)),
            sensitivity=float(options.get(CONF_SENSITIVITY, DEFAULT_SENSITIVITY)),
            detector=options.get(CONF_DETECTOR, DETECTOR_HEURISTIC),
            obico_url=options.get(CONF_OBICO_URL) or None,
        )


class PrintMonitor:
    """Watches one printer's jobs through a camera, and pauses the ones that fail."""

    def __init__(
        self, hass: HomeAssistant, entry: ConfigEntry, printer: PrinterCoordinator
    ) -> None:
        """Prepare the monitor of `printer`; it watches nothing until `async_start`."""
        self.hass = hass
        self._entry = entry
        self._printer = printer
        self.settings = MonitorSettings.of(printer.subentry.data)
        self._watch = PrintWatch(
            self._detector(),
            WatchSettings.for_interval(
                self.settings.interval_s, sensitivity=self.settings.sensitivity
            ),
        )
        # On from a failure's pause until the job resumes or another starts.
        self.failure_detected = False
        # Where the last failure's snapshot is.
        self.evidence: Evidence | None = None
        self._status: PrinterStatus | None = None
        # A job is being watched: from its start (or when it is first seen) to its end.
        self._watching = False
        # Counts jobs and resumes: a frame judged for an older one is not acted on.
        self._generation = 0
        self._warned = False
        self._judging = False
        self._camera_failing = False
        self._detector_failed = False
        self._stop_ticks: CALLBACK_TYPE | None = None
        self._listeners: list[CALLBACK_TYPE] = []

    @property
    def score(self) -> float | None:
        """Return the smoothed failure score of the watched job; None while none is watched."""
        if not self._watching or not (results := self._watch.results):
            return None
        return results[-1].smoothed

    @callback
    def async_add_listener(self, listener: CALLBACK_TYPE) -> CALLBACK_TYPE:
        """Call `listener` whenever the score or the failure changes; return what stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @callback
    def async_start(self) -> None:
        """Follow the printer's jobs until the entry unloads."""
        self._entry.async_on_unload(self._printer.async_add_listener(self._async_status_changed))
        self._entry.async_on_unload(self._async_stop_ticks)
        self._async_status_changed()

    def _detector(self) -> Detector:
        """Return the detector the settings ask for."""
        session = async_get_clientsession(self.hass)
        detector = self.settings.detector
        if (profile := VISION_PROFILES.get(detector)) is not None:
            data = self._entry.data
            return VisionDetector(session, data[CONF_URL], data[CONF_TOKEN], model=profile)
        if detector == DETECTOR_OBICO and self.settings.obico_url:
            return ObicoDetector(session, self.settings.obico_url)
        return HeuristicDetector()

    @callback
    def _async_status_changed(self) -> None:
        """Start, resume and end the watch with the printer's job."""
        if (now := self._printer.data) is None:
            return
        before, self._status = self._status, now
        event = None if before is None else job_event(before, now)
        if event is JobEvent.STARTED or (now.busy and not self._watching):
            # A new job, or one that ran already when Home Assistant started.
            self._watch.reset(now.file or "print")
            self._begin()
            self._warned = False
        elif event is JobEvent.RESUMED:
            # A person judged the print fine: the watch learns the scene again.
            self._watch.resume()
            self._begin()
        elif event in (JobEvent.FINISHED, JobEvent.STOPPED):
            self._watching = False
            self._async_update_listeners()
        if now.state is PrinterState.PRINTING and self._watching and not self._detector_failed:
            self._async_start_ticks()
        else:
            self._async_stop_ticks()

    @callback
    def _begin(self) -> None:
        """Watch the job afresh: no failure, no frame of an older one acted on."""
        self._watching = True
        self._generation += 1
        self.failure_detected = False
        self._detector_failed = False
        self._async_update_listeners()

    @callback
    def _async_start_ticks(self) -> None:
        if self._stop_ticks is None:
            self._stop_ticks = async_track_time_interval(
                self.hass,
                self._async_tick,
                timedelta(seconds=self.settings.interval_s),
                name=f"{self._printer.name} print monitor",
                cancel_on_shutdown=True,
            )

    @callback
    def _async_stop_ticks(self) -> None:
        if self._stop_ticks is not None:
            self._stop_ticks()
            self._stop_ticks = None

    @callback
    def _async_tick(self, _: datetime) -> None:
        """Take the next snapshot, unless the last one is still being judged."""
        if self._judging:
            return
        self._judging = True
        self._entry.async_create_background_task(
            self.hass, self._async_judge_next_frame(), f"{self._printer.name} print monitor frame"
        )

    async def _async_judge_next_frame(self) -> None:
        try:
            await self._async_judge(self._generation)
        finally:
            self._judging = False

    async def _async_judge(self, generation: int) -> None:
        """Judge one snapshot; pause the printer, or warn, when the watch says so."""
        if (camera_id := self._camera_id()) is None:
            self._camera_failed(f"{self._printer.name} has no camera to watch")
            return
        try:
            image = await camera.async_get_image(self.hass, camera_id)
        except HomeAssistantError as err:
            self._camera_failed(f"{camera_id} sent no snapshot: {err}")
            return
        if self._camera_failing:
            _LOGGER.info("The print monitor of %s gets snapshots again", self._printer.name)
            self._camera_failing = False
        try:
            result = await self._watch.process(image.content, url=self._image_url(camera_id))
        except DetectorError as err:
            # A setup someone must fix (a rejected token): no use asking again this job.
            _LOGGER.error(  # noqa: TRY400 - the message says it all; no traceback
                "The print monitor of %s stopped: %s", self._printer.name, err
            )
            self._detector_failed = True
            self._async_stop_ticks()
            return
        if generation != self._generation:
            return
        if result.should_pause:
            await self._async_failure(result)
        elif result.level is Level.WARN and not self._warned:
            self._warned = True
            await self._async_notify("print_warning", result, "")
        self._async_update_listeners()

    def _camera_failed(self, why: str) -> None:
        """Log a camera that gives nothing, once until it gives a snapshot again."""
        if not self._camera_failing:
            _LOGGER.warning("The print monitor of %s skips snapshots: %s", self._printer.name, why)
            self._camera_failing = True

    def _camera_id(self) -> str | None:
        """Return the camera to watch: the chosen one, else the printer's own."""
        if self.settings.camera:
            return self.settings.camera
        return er.async_get(self.hass).async_get_entity_id(
            CAMERA_DOMAIN, DOMAIN, f"{self._printer.unique_id}_webcam"
        )

    def _image_url(self, camera_id: str) -> str | None:
        """Return where Obico's ML API fetches the snapshot: Home Assistant's camera proxy."""
        if not isinstance(self._watch.detector, ObicoDetector):
            return None
        state = self.hass.states.get(camera_id)
        if state is None or not (token := state.attributes.get("access_token")):
            return None
        try:
            base = get_url(self.hass, allow_external=False)
        except NoURLAvailableError:
            return None
        return f"{base}/api/camera_proxy/{camera_id}?token={token}"

    async def _async_failure(self, result: WatchResult) -> None:
        """Pause the printer, keep the evidence, tell automations and the user."""
        printer = self._printer
        try:
            await printer.async_pause()
        except HomeAssistantError as err:
            # The print may have ended or been paused meanwhile; the failure is still told.
            _LOGGER.warning("%s could not be paused after a failure: %s", printer.name, err)
        self.failure_detected = True
        folder = self._evidence_folder(result.taken_at)
        try:
            self.evidence = await self.hass.async_add_executor_job(
                self._watch.write_evidence, folder
            )
        except OSError as err:
            _LOGGER.error(  # noqa: TRY400 - the message says it all; no traceback
                "The evidence of %s's failure was not stored: %s", printer.name, err
            )
            self.evidence = None
        evidence = self.evidence
        self.hass.bus.async_fire(
            EVENT_PRINT_FAILURE,
            {
                "device_id": printer.device_id,
                "printer": printer.name,
                "score": result.smoothed,
                "reason": result.reason,
                "evidence": None if evidence is None else str(evidence.image),
                "record": None if evidence is None else str(evidence.record),
            },
        )
        await self._async_notify("print_failure", result, str(folder))

    def _evidence_folder(self, taken_at: datetime) -> Path:
        """Return the folder of one failure's evidence, in the media folder."""
        media = self.hass.config.media_dirs.get("local") or self.hass.config.path("media")
        moment = dt_util.as_local(taken_at).strftime("%Y%m%d-%H%M%S")
        return Path(media) / EVIDENCE_FOLDER / slugify(self._printer.name) / moment

    async def _async_notify(self, key: str, result: WatchResult, folder: str) -> None:
        """Leave a notification in the user's language; one per printer and kind."""
        strings = await translation.async_get_translations(
            self.hass, self.hass.config.language, "common", {DOMAIN}
        )
        placeholders = {
            "printer": self._printer.name,
            "score": f"{result.smoothed:.0%}",
            "reason": result.reason,
            "folder": folder,
        }
        prefix = f"component.{DOMAIN}.common.{key}"
        persistent_notification.async_create(
            self.hass,
            strings[f"{prefix}_message"].format(**placeholders),
            title=strings[f"{prefix}_title"].format(**placeholders),
            notification_id=f"{DOMAIN}_{key}_{self._printer.subentry.subentry_id}",
        )

    @callback
    def _async_update_listeners(self) -> None:
        for listener in list(self._listeners):
            listener()
