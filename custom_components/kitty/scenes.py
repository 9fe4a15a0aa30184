"""The shop scenes: what the shop does around a printer's jobs, through Home Assistant's actions.

Per printer: scenes or scripts run when a job starts, when it pauses or fails, and
when it finishes; a fume extractor runs from a job's start until some minutes after
its end; the printer's smart plug turns off once a finished job's nozzle cooled.

The plug never turns off while a job holds the printer or the nozzle is hot (or its
temperature is unknown): a hot end without its fan can creep heat up the filament
path. A pending switch-off of the extractor does not survive a restart of Home
Assistant or a reload of KITTY.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
import logging
from typing import Any, Self

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import ATTR_ENTITY_ID, SERVICE_TURN_OFF, SERVICE_TURN_ON
from homeassistant.core import CALLBACK_TYPE, Context, HomeAssistant, callback, split_entity_id
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.event import async_call_later

from kittyai.printers.base import PrinterState, PrinterStatus

from .const import (
    CONF_EXTRACTOR_DELAY,
    CONF_FINISH_SCENES,
    CONF_FUME_EXTRACTOR,
    CONF_PAUSE_SCENES,
    CONF_PLUG_TEMPERATURE,
    CONF_POWER_PLUG,
    CONF_START_SCENES,
    DEFAULT_EXTRACTOR_DELAY,
    DEFAULT_PLUG_TEMPERATURE,
    SECTION_SCENES,
)
from .jobs import JobEvent, async_track_jobs
from .printer_coordinator import PrinterCoordinator

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SceneSettings:
    """A printer's shop scenes, as its subentry configures them."""

    start: tuple[str, ...] = ()
    pause: tuple[str, ...] = ()
    finish: tuple[str, ...] = ()
    extractor: str | None = None
    extractor_delay: timedelta = timedelta(minutes=DEFAULT_EXTRACTOR_DELAY)
    plug: str | None = None
    plug_temperature: float = DEFAULT_PLUG_TEMPERATURE

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Self:
        """Return the settings a printer subentry's data holds; defaults where it holds none."""
        options = data.get(SECTION_SCENES, {})
        return cls(
            start=tuple(options.get(CONF_START_SCENES, ())),
            pause=tuple(options.get(CONF_PAUSE_SCENES, ())),
            finish=tuple(options.get(CONF_FINISH_SCENES, ())),
            extractor=options.get(CONF_FUME_EXTRACTOR) or None,
            extractor_delay=timedelta(
                minutes=float(options.get(CONF_EXTRACTOR_DELAY, DEFAULT_EXTRACTOR_DELAY))
            ),
            plug=options.get(CONF_POWER_PLUG) or None,
            plug_temperature=float(options.get(CONF_PLUG_TEMPERATURE, DEFAULT_PLUG_TEMPERATURE)),
        )


async def async_run_scenes(
    hass: HomeAssistant, entity_ids: Iterable[str], context: Context | None = None
) -> None:
    """Turn on scenes and scripts; one that fails is logged, the others still run.

    A script runs in the background: this does not wait for it to end.
    """
    by_domain: defaultdict[str, list[str]] = defaultdict(list)
    for entity_id in entity_ids:
        by_domain[split_entity_id(entity_id)[0]].append(entity_id)
    for domain, ids in by_domain.items():
        await _async_switch(hass, domain, SERVICE_TURN_ON, ids, context)


async def _async_switch(
    hass: HomeAssistant,
    domain: str,
    service: str,
    entity_ids: list[str],
    context: Context | None = None,
) -> None:
    """Call `domain.service` for the entities; a failure is logged, the print goes on."""
    try:
        await hass.services.async_call(
            domain, service, {ATTR_ENTITY_ID: entity_ids}, blocking=True, context=context
        )
    except HomeAssistantError as err:
        _LOGGER.warning("%s.%s of %s failed: %s", domain, service, ", ".join(entity_ids), err)


class PrinterScenes:
    """Runs one printer's scenes, fume extractor and smart plug along its jobs."""

    def __init__(
        self, hass: HomeAssistant, entry: ConfigEntry, printer: PrinterCoordinator
    ) -> None:
        """Prepare the scenes of `printer`; nothing runs until `async_start`."""
        self.hass = hass
        self._entry = entry
        self._printer = printer
        self.settings = SceneSettings.of(printer.subentry.data)
        self._cancel_extractor_off: CALLBACK_TYPE | None = None
        # A finished job's plug, waiting for the nozzle to cool.
        self._plug_pending = False

    @callback
    def async_start(self) -> None:
        """Follow the printer's jobs until the entry unloads."""
        self._entry.async_on_unload(async_track_jobs(self._printer, self._async_job_changed))
        if self.settings.plug is not None:
            self._entry.async_on_unload(self._printer.async_add_listener(self._async_check_plug))
        self._entry.async_on_unload(self._async_keep_extractor)

    @callback
    def _async_job_changed(self, event: JobEvent, status: PrinterStatus) -> None:
        settings = self.settings
        if event is JobEvent.STARTED:
            self._plug_pending = False
            self._run(settings.start)
            if settings.extractor is not None:
                self._async_keep_extractor()
                self._call(settings.extractor, SERVICE_TURN_ON)
        elif event is JobEvent.PAUSED or (
            event is JobEvent.STOPPED and status.state is PrinterState.ERROR
        ):
            self._run(settings.pause)
        if event is JobEvent.FINISHED:
            self._run(settings.finish)
            self._plug_pending = settings.plug is not None
        if event in (JobEvent.FINISHED, JobEvent.STOPPED) and settings.extractor is not None:
            self._async_keep_extractor()
            self._cancel_extractor_off = async_call_later(
                self.hass,
                settings.extractor_delay,
                partial(self._async_extractor_off, settings.extractor),
            )

    @callback
    def _async_check_plug(self) -> None:
        """Turn the plug off once a finished job's nozzle is below the threshold."""
        status, plug = self._printer.data, self.settings.plug
        if not self._plug_pending or plug is None or status is None or status.busy:
            return
        if (nozzle := status.nozzle.actual) is None or nozzle >= self.settings.plug_temperature:
            return
        self._plug_pending = False
        self._call(plug, SERVICE_TURN_OFF)

    @callback
    def _async_extractor_off(self, extractor: str, _: datetime) -> None:
        self._cancel_extractor_off = None
        self._call(extractor, SERVICE_TURN_OFF)

    @callback
    def _async_keep_extractor(self) -> None:
        """Forget a pending switch-off of the extractor."""
        if self._cancel_extractor_off is not None:
            self._cancel_extractor_off()
            self._cancel_extractor_off = None

    @callback
    def _run(self, scenes: tuple[str, ...]) -> None:
        if scenes:
            self._entry.async_create_task(
                self.hass, async_run_scenes(self.hass, scenes), f"{self._printer.name} scenes"
            )

    @callback
    def _call(self, entity_id: str, service: str) -> None:
        domain = split_entity_id(entity_id)[0]
        self._entry.async_create_task(
            self.hass,
            _async_switch(self.hass, domain, service, [entity_id]),
            f"{self._printer.name} {entity_id} {service}",
        )
