"""Sensors of the KITTY integration: the router's routing and costs, the printers' jobs."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, override

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory, UnitOfTemperature, UnitOfTime
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType
from homeassistant.util import dt as dt_util

from kittyai.catalog import ServiceName
from kittyai.contract.routing import RouterStats, Tier
from kittyai.printers.base import PrinterState, PrinterStatus

from . import KittyConfigEntry
from .entity import KittyEntity, KittyPrinterEntity, KittyPrintMonitorEntity

# Entities only read pushed data.
PARALLEL_UPDATES = 0

# The router counts money in US dollars (ISO 4217, as the monetary device class wants).
USD = "USD"


@dataclass(frozen=True, kw_only=True)
class KittyRouterSensorEntityDescription(SensorEntityDescription):
    """A sensor read from the router's statistics."""

    value_fn: Callable[[RouterStats], StateType]
    # For totals that restart with each period: when the running period began.
    last_reset_fn: Callable[[RouterStats], datetime] | None = None
    attributes_fn: Callable[[RouterStats], dict[str, Any]] | None = None


def _percent(share: float | None) -> float | None:
    """Return a 0-to-1 share as a percentage, without float noise like 56.99999999999999."""
    return None if share is None else round(share * 100, 2)


def _start_of_day(stats: RouterStats) -> datetime:
    """Return UTC midnight of the statistics' day: the router's costs follow the UTC calendar."""
    return dt_util.as_utc(stats.at).replace(hour=0, minute=0, second=0, microsecond=0)


def _start_of_month(stats: RouterStats) -> datetime:
    """Return the first UTC midnight of the statistics' month."""
    return _start_of_day(stats).replace(day=1)


def _last_route_attributes(stats: RouterStats) -> dict[str, Any]:
    """Return which backend answered the last turn, why, and when."""
    if (route := stats.last_route) is None:
        return {}
    return {"backend": route.backend, "reason": route.reason, "at": route.at}


SENSORS: tuple[KittyRouterSensorEntityDescription, ...] = (
    KittyRouterSensorEntityDescription(
        key="local_share",
        translation_key="local_share",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        value_fn=lambda stats: _percent(stats.local_share),
    ),
    KittyRouterSensorEntityDescription(
        key="p95_latency",
        translation_key="p95_latency",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.MILLISECONDS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda stats: stats.p95_latency_ms,
    ),
    # Monetary sensors only take the `total` state class; the costs restart every
    # UTC day and month, which `last_reset` tells the statistics.
    KittyRouterSensorEntityDescription(
        key="cost_today",
        translation_key="cost_today",
        device_class=SensorDeviceClass.MONETARY,
        native_unit_of_measurement=USD,
        state_class=SensorStateClass.TOTAL,
        suggested_display_precision=2,
        value_fn=lambda stats: stats.cost_today_usd,
        last_reset_fn=_start_of_day,
    ),
    KittyRouterSensorEntityDescription(
        key="cost_month",
        translation_key="cost_month",
        device_class=SensorDeviceClass.MONETARY,
        native_unit_of_measurement=USD,
        state_class=SensorStateClass.TOTAL,
        suggested_display_precision=2,
        value_fn=lambda stats: stats.cost_month_usd,
        last_reset_fn=_start_of_month,
    ),
    # What is left is no total, so it has no state class and no long-term statistics.
    KittyRouterSensorEntityDescription(
        key="budget_left",
        translation_key="budget_left",
        device_class=SensorDeviceClass.MONETARY,
        native_unit_of_measurement=USD,
        suggested_display_precision=2,
        value_fn=lambda stats: stats.budget_left_usd,
    ),
    KittyRouterSensorEntityDescription(
        key="cache_hit_rate",
        translation_key="cache_hit_rate",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda stats: _percent(stats.cache_hit_rate),
    ),
    KittyRouterSensorEntityDescription(
        key="last_route",
        translation_key="last_route",
        device_class=SensorDeviceClass.ENUM,
        options=[tier.value for tier in Tier],
        value_fn=lambda stats: stats.last_route.tier if stats.last_route else None,
        attributes_fn=_last_route_attributes,
    ),
)


@dataclass(frozen=True, kw_only=True)
class KittyPrinterSensorEntityDescription(SensorEntityDescription):
    """A sensor read from a printer's status."""

    value_fn: Callable[[PrinterStatus], StateType | datetime]
    attributes_fn: Callable[[PrinterStatus], dict[str, Any]] | None = None


def _estimated_finish(status: PrinterStatus) -> datetime | None:
    """Return when the job should be done, to the second, while the printer prints."""
    if status.state is not PrinterState.PRINTING or status.time_left_s is None:
        return None
    return dt_util.utcnow().replace(microsecond=0) + timedelta(seconds=round(status.time_left_s))


def _job_started(status: PrinterStatus) -> datetime | None:
    """Return when the running job started, from how long it has printed."""
    if not status.busy or status.print_time_s is None:
        return None
    return dt_util.utcnow().replace(microsecond=0) - timedelta(seconds=round(status.print_time_s))


PRINTER_SENSORS: tuple[KittyPrinterSensorEntityDescription, ...] = (
    KittyPrinterSensorEntityDescription(
        key="state",
        translation_key="printer_state",
        device_class=SensorDeviceClass.ENUM,
        options=[state.value for state in PrinterState],
        value_fn=lambda status: status.state.value,
        # The print server's own words, e.g. OctoPrint's "Offline after error".
        attributes_fn=lambda status: {"message": status.message},
    ),
    KittyPrinterSensorEntityDescription(
        key="job_progress",
        translation_key="job_progress",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        value_fn=lambda status: None if status.progress is None else round(status.progress, 2),
    ),
    KittyPrinterSensorEntityDescription(
        key="time_left",
        translation_key="time_left",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.SECONDS,
        suggested_display_precision=0,
        value_fn=lambda status: (
            round(status.time_left_s) if status.busy and status.time_left_s is not None else None
        ),
    ),
    KittyPrinterSensorEntityDescription(
        key="estimated_finish",
        translation_key="estimated_finish",
        device_class=SensorDeviceClass.TIMESTAMP,
        value_fn=_estimated_finish,
    ),
    KittyPrinterSensorEntityDescription(
        key="job_started",
        translation_key="job_started",
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=_job_started,
    ),
    KittyPrinterSensorEntityDescription(
        key="current_file",
        translation_key="current_file",
        value_fn=lambda status: status.file,
    ),
    KittyPrinterSensorEntityDescription(
        key="nozzle_temperature",
        translation_key="nozzle_temperature",
        # In °C, as the print servers report them.
        device_class=SensorDeviceClass.TEMPERATURE,
        native_unit_of_measurement=UnitOfTemperature.CELSIUS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda status: status.nozzle.actual,
    ),
    KittyPrinterSensorEntityDescription(
        key="nozzle_target",
        translation_key="nozzle_target",
        # In °C, as the print servers report them.
        device_class=SensorDeviceClass.TEMPERATURE,
        native_unit_of_measurement=UnitOfTemperature.CELSIUS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda status: status.nozzle.target,
    ),
    KittyPrinterSensorEntityDescription(
        key="bed_temperature",
        translation_key="bed_temperature",
        # In °C, as the print servers report them.
        device_class=SensorDeviceClass.TEMPERATURE,
        native_unit_of_measurement=UnitOfTemperature.CELSIUS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda status: status.bed.actual,
    ),
    KittyPrinterSensorEntityDescription(
        key="bed_target",
        translation_key="bed_target",
        # In °C, as the print servers report them.
        device_class=SensorDeviceClass.TEMPERATURE,
        native_unit_of_measurement=UnitOfTemperature.CELSIUS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda status: status.bed.target,
    ),
)

FAILURE_SCORE = SensorEntityDescription(
    key="failure_score",
    translation_key="failure_score",
    native_unit_of_measurement=PERCENTAGE,
    state_class=SensorStateClass.MEASUREMENT,
    suggested_display_precision=0,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: KittyConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the router's statistics sensors, every printer's job sensors and failure scores."""
    coordinator = entry.runtime_data.coordinator
    async_add_entities(
        KittyRouterSensor(coordinator, ServiceName.ROUTER, description) for description in SENSORS
    )
    for subentry_id, printer in entry.runtime_data.printers.items():
        async_add_entities(
            (KittyPrinterSensor(printer, description) for description in PRINTER_SENSORS),
            config_subentry_id=subentry_id,
        )
    for subentry_id, monitor in entry.runtime_data.monitors.items():
        async_add_entities(
            [
                KittyFailureScoreSensor(
                    entry.runtime_data.printers[subentry_id], monitor, FAILURE_SCORE
                )
            ],
            config_subentry_id=subentry_id,
        )


class KittyRouterSensor(KittyEntity, SensorEntity):
    """One figure of the router's retained statistics."""

    entity_description: KittyRouterSensorEntityDescription

    @property
    def _stats(self) -> RouterStats | None:
        return self.coordinator.data[ServiceName.ROUTER].stats

    @property
    @override
    def available(self) -> bool:
        """Return False while the router is offline or has not sent statistics yet."""
        router = self.coordinator.data[ServiceName.ROUTER]
        return super().available and router.online and router.stats is not None

    @property
    @override
    def native_value(self) -> StateType:
        """Return the figure; None when the router has nothing to say yet (no turns)."""
        if (stats := self._stats) is None:
            return None
        return self.entity_description.value_fn(stats)

    @property
    @override
    def last_reset(self) -> datetime | None:
        """Return when the current period of a cost began."""
        if (stats := self._stats) is None or self.entity_description.last_reset_fn is None:
            return None
        return self.entity_description.last_reset_fn(stats)

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the details of the last route."""
        if (stats := self._stats) is None or self.entity_description.attributes_fn is None:
            return None
        return self.entity_description.attributes_fn(stats)


class KittyPrinterSensor(KittyPrinterEntity, SensorEntity):
    """One figure of a printer's status."""

    entity_description: KittyPrinterSensorEntityDescription

    @property
    @override
    def native_value(self) -> StateType | datetime:
        """Return the figure; None where the printer does not say (no job, no heater)."""
        return self.entity_description.value_fn(self.status)

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the print server's own words for the state."""
        if self.entity_description.attributes_fn is None:
            return None
        return self.entity_description.attributes_fn(self.status)


class KittyFailureScoreSensor(KittyPrintMonitorEntity, SensorEntity):
    """The print monitor's smoothed failure score of the job it watches."""

    @property
    @override
    def native_value(self) -> float | None:
        """Return the score in percent; None while no job is watched."""
        return _percent(self.monitor.score)
