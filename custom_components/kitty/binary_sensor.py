"""Binary sensors of the KITTY integration: services connected, printers busy, prints failing."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import override

from homeassistant.components.binary_sensor import (
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from kittyai.catalog import SERVICES
from kittyai.printers.base import PrinterState, PrinterStatus

from . import KittyConfigEntry
from .entity import KittyEntity, KittyPrinterEntity, KittyPrintMonitorEntity

# Entities only read pushed data.
PARALLEL_UPDATES = 0

CONNECTION = BinarySensorEntityDescription(
    key="connection",
    translation_key="connection",
    device_class=BinarySensorDeviceClass.CONNECTIVITY,
    entity_category=EntityCategory.DIAGNOSTIC,
)


@dataclass(frozen=True, kw_only=True)
class KittyPrinterBinarySensorEntityDescription(BinarySensorEntityDescription):
    """A binary sensor read from a printer's status."""

    is_on_fn: Callable[[PrinterStatus], bool]


PRINTER_BINARY_SENSORS: tuple[KittyPrinterBinarySensorEntityDescription, ...] = (
    KittyPrinterBinarySensorEntityDescription(
        key="printing",
        translation_key="printing",
        device_class=BinarySensorDeviceClass.RUNNING,
        is_on_fn=lambda status: status.state is PrinterState.PRINTING,
    ),
    KittyPrinterBinarySensorEntityDescription(
        key="error",
        translation_key="printer_error",
        device_class=BinarySensorDeviceClass.PROBLEM,
        is_on_fn=lambda status: status.state is PrinterState.ERROR,
    ),
)

FAILURE_DETECTED = BinarySensorEntityDescription(
    key="failure_detected",
    translation_key="failure_detected",
    device_class=BinarySensorDeviceClass.PROBLEM,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: KittyConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a connectivity sensor for every KITTY service, and each printer's sensors."""
    coordinator = entry.runtime_data.coordinator
    async_add_entities(
        KittyConnectionSensor(coordinator, service, CONNECTION) for service in SERVICES
    )
    for subentry_id, printer in entry.runtime_data.printers.items():
        async_add_entities(
            (
                KittyPrinterBinarySensor(printer, description)
                for description in PRINTER_BINARY_SENSORS
            ),
            config_subentry_id=subentry_id,
        )
    for subentry_id, monitor in entry.runtime_data.monitors.items():
        async_add_entities(
            [
                KittyFailureSensor(
                    entry.runtime_data.printers[subentry_id], monitor, FAILURE_DETECTED
                )
            ],
            config_subentry_id=subentry_id,
        )


class KittyConnectionSensor(KittyEntity, BinarySensorEntity):
    """On while the service's retained availability is `online`.

    Off when it said `offline`, when the broker delivered its last will, and
    while it was never seen (its app is not installed or never started).
    """

    @property
    @override
    def is_on(self) -> bool:
        """Return whether the service is online."""
        return self.coordinator.data[self.service].online


class KittyPrinterBinarySensor(KittyPrinterEntity, BinarySensorEntity):
    """Whether a printer prints, or reports an error."""

    entity_description: KittyPrinterBinarySensorEntityDescription

    @property
    @override
    def is_on(self) -> bool:
        """Return whether the printer is in the state the sensor watches."""
        return self.entity_description.is_on_fn(self.status)


class KittyFailureSensor(KittyPrintMonitorEntity, BinarySensorEntity):
    """On from the pause of a failing print until the job resumes or another starts."""

    @property
    @override
    def is_on(self) -> bool:
        """Return whether the print monitor paused the job for a failure."""
        return self.monitor.failure_detected
