"""Binary sensors of the KITTY integration: is each KITTY service connected."""

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

from . import KittyConfigEntry
from .entity import KittyEntity

# Entities only read pushed data.
PARALLEL_UPDATES = 0

CONNECTION = BinarySensorEntityDescription(
    key="connection",
    translation_key="connection",
    device_class=BinarySensorDeviceClass.CONNECTIVITY,
    entity_category=EntityCategory.DIAGNOSTIC,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: KittyConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a connectivity sensor for every KITTY service."""
    coordinator = entry.runtime_data.coordinator
    async_add_entities(
        KittyConnectionSensor(coordinator, service, CONNECTION) for service in SERVICES
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
