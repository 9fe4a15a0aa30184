"""Base entity of the KITTY integration: entities of a KITTY service's device."""

from typing import override

from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from kittyai.catalog import ServiceName

from .coordinator import KittyCoordinator


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
