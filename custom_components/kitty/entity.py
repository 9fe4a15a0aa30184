"""Base entities of the KITTY integration: of a KITTY service, a printer, a print monitor."""

from typing import override

from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from kittyai.catalog import ServiceName
from kittyai.printers.base import PrinterStatus

from .coordinator import KittyCoordinator
from .print_monitor import PrintMonitor
from .printer_coordinator import PrinterCoordinator


class KittyEntity(CoordinatorEntity[KittyCoordinator]):
    """An entity of one KITTY service, on the device the coordinator keeps for it."""

    _attr_has_entity_name = True

    def __init__(
        self,
        coordinator: KittyCoordinator,
        service: ServiceName,
        description: EntityDescription,
    ) -> None:
        """Describe the entity of `service` that `description` names."""
        super().__init__(coordinator)
        self.service = service
        self.entity_description = description
        self._attr_unique_id = f"{coordinator.config_entry.unique_id}_{service}_{description.key}"
        self._attr_device_info = DeviceInfo(identifiers={coordinator.device_identifier(service)})

    @property
    @override
    def available(self) -> bool:
        """Return False while HA is cut off from the broker: the status may be stale."""
        return super().available and self.coordinator.mqtt_connected


class KittyPrinterEntity(CoordinatorEntity[PrinterCoordinator]):
    """An entity of one printer, on the printer's device."""

    _attr_has_entity_name = True

    def __init__(self, coordinator: PrinterCoordinator, description: EntityDescription) -> None:
        """Describe the entity of the printer that `description` names."""
        super().__init__(coordinator)
        self.entity_description = description
        self._attr_unique_id = f"{coordinator.unique_id}_{description.key}"
        self._attr_device_info = DeviceInfo(identifiers={coordinator.device_identifier})

    @property
    def status(self) -> PrinterStatus:
        """Return the printer's last status; only read while the entity is available."""
        return self.coordinator.data

    @property
    @override
    def available(self) -> bool:
        """Return False while the printer does not answer, or never answered yet."""
        return self.coordinator.online


class KittyPrintMonitorEntity(KittyPrinterEntity):
    """An entity of a printer's print monitor, on the printer's device."""

    def __init__(
        self,
        coordinator: PrinterCoordinator,
        monitor: PrintMonitor,
        description: EntityDescription,
    ) -> None:
        """Describe the entity of the monitor that `description` names."""
        super().__init__(coordinator, description)
        self.monitor = monitor

    @override
    async def async_added_to_hass(self) -> None:
        """Follow the monitor's score and failures as well as the printer."""
        await super().async_added_to_hass()
        self.async_on_remove(self.monitor.async_add_listener(self.async_write_ha_state))
