"""Sensors of the KITTY integration: routing and costs, the printers' jobs, knowledge, runs."""

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
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType
from homeassistant.helpers.update_coordinator import CoordinatorEntity
from homeassistant.util import dt as dt_util

from kittyai.catalog import ServiceName
from kittyai.contract.orchestrator import RunState, RunStats
from kittyai.contract.rag import KnowledgeStats, Project
from kittyai.contract.routing import RouterStats, Tier
from kittyai.printers.base import PrinterState, PrinterStatus

from . import KittyConfigEntry
from .entity import KittyEntity, KittyPrinterEntity, KittyPrintMonitorEntity
from .knowledge import KnowledgeCoordinator
from .optional_service import OptionalServiceCoordinator

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


@dataclass(frozen=True, kw_only=True)
class KittyServiceSensorEntityDescription[DataT](SensorEntityDescription):
    """A sensor read from what an optional service (knowledge, orchestrator) reported."""

    value_fn: Callable[[DataT], StateType | datetime]
    attributes_fn: Callable[[DataT], dict[str, Any]] | None = None


KNOWLEDGE_SENSORS: tuple[KittyServiceSensorEntityDescription[KnowledgeStats], ...] = (
    KittyServiceSensorEntityDescription(
        key="documents",
        translation_key="documents",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda stats: stats.documents,
    ),
    KittyServiceSensorEntityDescription(
        key="chunks",
        translation_key="chunks",
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda stats: stats.chunks,
    ),
    KittyServiceSensorEntityDescription(
        key="last_ingest",
        translation_key="last_ingest",
        device_class=SensorDeviceClass.TIMESTAMP,
        value_fn=lambda stats: stats.last_ingest_at,
        attributes_fn=lambda stats: {"title": stats.last_ingest_title},
    ),
)


def _last_result_attributes(stats: RunStats) -> dict[str, Any]:
    """Return which run ended last, of which template, when and with what message."""
    if (result := stats.last_result) is None:
        return {}
    return {
        "run_id": result.run_id,
        "template": result.template,
        "finished_at": result.finished_at,
        "message": result.message,
    }


RUN_SENSORS: tuple[KittyServiceSensorEntityDescription[RunStats], ...] = (
    KittyServiceSensorEntityDescription(
        key="active_runs",
        translation_key="active_runs",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda stats: stats.active,
    ),
    KittyServiceSensorEntityDescription(
        key="runs_awaiting_approval",
        translation_key="runs_awaiting_approval",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda stats: len(stats.awaiting_approval),
        # What each run waits for: enough for a dashboard to show and a human to decide.
        attributes_fn=lambda stats: {
            "runs": [awaiting.model_dump(mode="json") for awaiting in stats.awaiting_approval]
        },
    ),
    KittyServiceSensorEntityDescription(
        key="last_run_result",
        translation_key="last_run_result",
        device_class=SensorDeviceClass.ENUM,
        options=[state.value for state in RunState if state.finished],
        value_fn=lambda stats: stats.last_result.state.value if stats.last_result else None,
        attributes_fn=_last_result_attributes,
    ),
)

PROJECT_OPEN_ITEMS = SensorEntityDescription(
    key="open_items",
    translation_key="project_open_items",
    state_class=SensorStateClass.MEASUREMENT,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: KittyConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the router's statistics, the printers' jobs and failure scores, knowledge and runs."""
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
    if (knowledge := entry.runtime_data.knowledge) is not None:
        device = DeviceInfo(identifiers={coordinator.device_identifier(ServiceName.RAG)})
        async_add_entities(
            KittyServiceSensor(knowledge, device, description) for description in KNOWLEDGE_SENSORS
        )
        _async_follow_projects(hass, entry, knowledge, device, async_add_entities)
    if (runs := entry.runtime_data.runs) is not None:
        device = DeviceInfo(identifiers={coordinator.device_identifier(ServiceName.ORCHESTRATOR)})
        async_add_entities(
            KittyServiceSensor(runs, device, description) for description in RUN_SENSORS
        )


@callback
def _async_follow_projects(
    hass: HomeAssistant,
    entry: KittyConfigEntry,
    knowledge: KnowledgeCoordinator,
    device: DeviceInfo,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Give each active project an open items sensor, and remove it once it is no longer active.

    Projects become active with a note and inactive after weeks without one; the
    service says which are. A sensor of a project no longer active is removed, even
    one left from before a restart.
    """
    registry = er.async_get(hass)
    prefix = f"{entry.unique_id}_{ServiceName.RAG}_project_"
    added: set[str] = set()

    @callback
    def _async_update() -> None:
        if (stats := knowledge.data) is None or not knowledge.last_update_success:
            return
        active = {project.id for project in stats.active_projects}
        for registry_entry in er.async_entries_for_config_entry(registry, entry.entry_id):
            if not registry_entry.unique_id.startswith(prefix):
                continue
            project_id = registry_entry.unique_id.removeprefix(prefix).removesuffix(
                f"_{PROJECT_OPEN_ITEMS.key}"
            )
            if project_id not in active:
                registry.async_remove(registry_entry.entity_id)
                added.discard(project_id)
        new = active - added
        added.update(new)
        async_add_entities(
            KittyProjectSensor(knowledge, device, prefix, project_id) for project_id in sorted(new)
        )

    _async_update()
    entry.async_on_unload(knowledge.async_add_listener(_async_update))


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


class KittyServiceSensor[DataT](
    CoordinatorEntity[OptionalServiceCoordinator[Any, DataT | None]], SensorEntity
):
    """One figure of what an optional service reported, on the service's device."""

    _attr_has_entity_name = True
    entity_description: KittyServiceSensorEntityDescription[DataT]

    def __init__(
        self,
        coordinator: OptionalServiceCoordinator[Any, DataT | None],
        device: DeviceInfo,
        description: KittyServiceSensorEntityDescription[DataT],
    ) -> None:
        """Describe the figure `description` names."""
        super().__init__(coordinator)
        self.entity_description = description
        entry_unique_id = coordinator.config_entry.unique_id
        self._attr_unique_id = f"{entry_unique_id}_{coordinator.service}_{description.key}"
        self._attr_device_info = device

    @property
    @override
    def available(self) -> bool:
        """Return False while the service does not answer, or has not been read yet."""
        return super().available and self.coordinator.data is not None

    @property
    @override
    def native_value(self) -> StateType | datetime:
        """Return the figure; None where the service has none (no ingest, no run ended yet)."""
        if (data := self.coordinator.data) is None:
            return None
        return self.entity_description.value_fn(data)

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the details of the figure: a title, the runs waiting, the last run."""
        attributes_fn = self.entity_description.attributes_fn
        if (data := self.coordinator.data) is None or attributes_fn is None:
            return None
        return attributes_fn(data)


class KittyProjectSensor(CoordinatorEntity[KnowledgeCoordinator], SensorEntity):
    """How many items of an active project are open, as its latest summary says."""

    _attr_has_entity_name = True
    entity_description = PROJECT_OPEN_ITEMS

    def __init__(
        self, coordinator: KnowledgeCoordinator, device: DeviceInfo, prefix: str, project_id: str
    ) -> None:
        """Describe the open items of `project_id`."""
        super().__init__(coordinator)
        self.project_id = project_id
        self._attr_unique_id = f"{prefix}{project_id}_{PROJECT_OPEN_ITEMS.key}"
        self._attr_translation_placeholders = {"project": project_id}
        self._attr_device_info = device

    @property
    def _project(self) -> Project | None:
        stats = self.coordinator.data
        if stats is None:
            return None
        return next((p for p in stats.active_projects if p.id == self.project_id), None)

    @property
    @override
    def available(self) -> bool:
        """Return False while the service does not answer."""
        return super().available and self._project is not None

    @property
    @override
    def native_value(self) -> int | None:
        """Return the open items of the project's latest summary."""
        return None if (project := self._project) is None else project.open_items
