"""The shop scenes: what the shop does around a printer's jobs, through Home Assistant's actions.

Per printer: scenes or scripts run when a job starts, when it pauses or fails, and
when it finishes; a fume extractor runs from a job's start until some minutes after
its end; the printer's smart plug turns off once a finished job's nozzle cooled.

The plug never turns off while a job holds the printer or the nozzle is hot (or its
temperature is unknown): a hot end without its fan can creep heat up the filament
path. What waits survives a restart of Home Assistant or a reload of KITTY: the
extractor's switch-off keeps its time, and the plug still goes off once the nozzle
cooled. It is kept in `.storage`, one file per entry, by printer subentry id.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
import logging
from typing import Any, Final, Self, TypedDict

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import ATTR_ENTITY_ID, SERVICE_TURN_OFF, SERVICE_TURN_ON
from homeassistant.core import CALLBACK_TYPE, Context, HomeAssistant, callback, split_entity_id
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.event import async_track_point_in_utc_time
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

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
    DOMAIN,
    SECTION_SCENES,
)
from .jobs import JobEvent, async_track_jobs
from .printer_coordinator import PrinterCoordinator

_LOGGER = logging.getLogger(__name__)

STORAGE_VERSION: Final = 1


class _StoredScenes(TypedDict):
    # When the extractor goes off, in UTC; None when no switch-off waits.
    extractor_off_at: str | None
    # Whether a finished job's plug waits for the nozzle to cool.
    plug_armed: bool


_NOTHING_PENDING: Final[_StoredScenes] = {"extractor_off_at": None, "plug_armed": False}


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


class SceneStore:
    """What the printers of one entry wait for, kept by printer subentry id."""

    def __init__(
        self, store: Store[dict[str, _StoredScenes]], printers: dict[str, _StoredScenes]
    ) -> None:
        """Keep `printers`, as read from `store`."""
        self._store = store
        self._printers = printers
        # Whether a change still waits for its write.
        self._unsaved = False

    @classmethod
    async def async_load(cls, hass: HomeAssistant, entry: ConfigEntry) -> Self:
        """Read what the entry's printers waited for; a removed printer's goes with it."""
        store = _store(hass, entry.entry_id)
        stored = await store.async_load() or {}
        scene_store = cls(
            store, {key: value for key, value in stored.items() if key in entry.subentries}
        )
        entry.async_on_unload(scene_store.async_flush)
        return scene_store

    @staticmethod
    async def async_remove(hass: HomeAssistant, entry_id: str) -> None:
        """Delete what the printers of a removed entry waited for."""
        await _store(hass, entry_id).async_remove()

    def get(self, subentry_id: str) -> _StoredScenes:
        """Return what the printer `subentry_id` waits for."""
        return self._printers.get(subentry_id, _NOTHING_PENDING)

    @callback
    def async_set(self, subentry_id: str, stored: _StoredScenes) -> None:
        """Keep what the printer `subentry_id` waits for now."""
        if self.get(subentry_id) == stored:
            return
        self._printers[subentry_id] = stored
        self._unsaved = True
        self._store.async_delay_save(self._data_to_save)

    async def async_flush(self) -> None:
        """Write what still waits for its write, before the entry is read again."""
        if self._unsaved:
            await self._store.async_save(self._data_to_save())

    @callback
    def _data_to_save(self) -> dict[str, _StoredScenes]:
        self._unsaved = False
        return {
            subentry_id: stored
            for subentry_id, stored in self._printers.items()
            if stored != _NOTHING_PENDING
        }


def _store(hass: HomeAssistant, entry_id: str) -> Store[dict[str, _StoredScenes]]:
    return Store(hass, STORAGE_VERSION, f"{DOMAIN}.{entry_id}.scenes", private=True)


class PrinterScenes:
    """Runs one printer's scenes, fume extractor and smart plug along its jobs."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: ConfigEntry,
        printer: PrinterCoordinator,
        store: SceneStore,
    ) -> None:
        """Prepare the scenes of `printer`; nothing runs until `async_start`."""
        self.hass = hass
        self._entry = entry
        self._printer = printer
        self.settings = SceneSettings.of(printer.subentry.data)
        self._subentry_id = printer.subentry.subentry_id
        self._store = store
        self._cancel_extractor_off: CALLBACK_TYPE | None = None
        # When the extractor goes off; None when no switch-off waits.
        self._extractor_off_at: datetime | None = None
        # A finished job's plug, waiting for the nozzle to cool.
        self._plug_pending = False

    @callback
    def async_start(self) -> None:
        """Follow the printer's jobs until the entry unloads; take up what waited before."""
        self._entry.async_on_unload(async_track_jobs(self._printer, self._async_job_changed))
        if self.settings.plug is not None:
            self._entry.async_on_unload(self._printer.async_add_listener(self._async_check_plug))
        # An unload keeps the stored switch-off: the next start takes it up.
        self._entry.async_on_unload(self._async_cancel_extractor_off)
        self._async_restore()

    @callback
    def _async_restore(self) -> None:
        """Take up the switch-offs that waited when KITTY stopped."""
        stored = self._store.get(self._subentry_id)
        settings = self.settings
        if (off_at := stored["extractor_off_at"]) is not None and settings.extractor is not None:
            # A time that passed while KITTY was away fires at once.
            self._async_schedule_extractor_off(settings.extractor, datetime.fromisoformat(off_at))
        self._plug_pending = stored["plug_armed"] and settings.plug is not None
        # Drops what the printer's settings no longer have.
        self._async_save()
        self._async_check_plug()

    @callback
    def _async_job_changed(self, event: JobEvent, status: PrinterStatus) -> None:
        settings = self.settings
        if event is JobEvent.STARTED:
            self._plug_pending = False
            self._run(settings.start)
            if settings.extractor is not None:
                self._async_cancel_extractor_off()
                self._extractor_off_at = None
                self._call(settings.extractor, SERVICE_TURN_ON)
        elif event is JobEvent.PAUSED or (
            event is JobEvent.STOPPED and status.state is PrinterState.ERROR
        ):
            self._run(settings.pause)
        if event is JobEvent.FINISHED:
            self._run(settings.finish)
            self._plug_pending = settings.plug is not None
        if event in (JobEvent.FINISHED, JobEvent.STOPPED) and settings.extractor is not None:
            self._async_schedule_extractor_off(
                settings.extractor, dt_util.utcnow() + settings.extractor_delay
            )
        self._async_save()

    @callback
    def _async_check_plug(self) -> None:
        """Turn the plug off once a finished job's nozzle is below the threshold."""
        status, plug = self._printer.data, self.settings.plug
        if not self._plug_pending or plug is None or status is None or status.busy:
            return
        if (nozzle := status.nozzle.actual) is None or nozzle >= self.settings.plug_temperature:
            return
        self._plug_pending = False
        self._async_save()
        self._call(plug, SERVICE_TURN_OFF)

    @callback
    def _async_schedule_extractor_off(self, extractor: str, off_at: datetime) -> None:
        self._async_cancel_extractor_off()
        self._extractor_off_at = off_at
        self._cancel_extractor_off = async_track_point_in_utc_time(
            self.hass, partial(self._async_extractor_off, extractor), off_at
        )

    @callback
    def _async_extractor_off(self, extractor: str, _: datetime) -> None:
        self._cancel_extractor_off = None
        self._extractor_off_at = None
        self._async_save()
        self._call(extractor, SERVICE_TURN_OFF)

    @callback
    def _async_cancel_extractor_off(self) -> None:
        """Cancel the timer of a pending switch-off of the extractor."""
        if self._cancel_extractor_off is not None:
            self._cancel_extractor_off()
            self._cancel_extractor_off = None

    @callback
    def _async_save(self) -> None:
        off_at = self._extractor_off_at
        self._store.async_set(
            self._subentry_id,
            {
                "extractor_off_at": None if off_at is None else off_at.isoformat(),
                "plug_armed": self._plug_pending,
            },
        )

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
