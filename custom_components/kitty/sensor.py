"""Sensors of the KITTY integration: how the router routes, what it costs, what is left."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, override

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory, UnitOfTime
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType
from homeassistant.util import dt as dt_util

from kittyai.catalog import ServiceName
from kittyai.contract.routing import RouterStats, Tier

from . import KittyConfigEntry
from .entity import KittyEntity

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


async def async_setup_entry(
    hass: HomeAssistant,
    entry: KittyConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the router's statistics sensors."""
    coordinator = entry.runtime_data.coordinator
    async_add_entities(
        KittyRouterSensor(coordinator, ServiceName.ROUTER, description) for description in SENSORS
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
