"""The newest part KITTY's CAD service made, as an image entity on the CAD service's device."""

from typing import Any, override

from homeassistant.components.image import ImageEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from kittyai.catalog import ServiceName

from . import KittyConfigEntry
from .cad import LatestPartCoordinator

# The image follows its coordinator; it sends no requests of its own.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: KittyConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the latest part image when the entry uses a CAD service."""
    if (latest := entry.runtime_data.latest_part) is None:
        return
    router = entry.runtime_data.coordinator
    async_add_entities(
        [LatestPartImage(latest, router.device_identifier(ServiceName.CAD), entry.unique_id)]
    )


class LatestPartImage(CoordinatorEntity[LatestPartCoordinator], ImageEntity):
    """The preview of the CAD service's newest part; updated when that part is another."""

    _attr_has_entity_name = True
    _attr_translation_key = "latest_part"
    _attr_content_type = "image/png"

    def __init__(
        self,
        coordinator: LatestPartCoordinator,
        device_identifier: tuple[str, str],
        entry_unique_id: str | None,
    ) -> None:
        """Show the parts `coordinator` follows, on the CAD service's device."""
        super().__init__(coordinator)
        ImageEntity.__init__(self, coordinator.hass)
        self._attr_unique_id = f"{entry_unique_id}_{ServiceName.CAD}_latest_part"
        self._attr_device_info = DeviceInfo(identifiers={device_identifier})
        self._show_latest()

    @callback
    @override
    def _handle_coordinator_update(self) -> None:
        """Show the newest part."""
        self._show_latest()
        super()._handle_coordinator_update()

    @callback
    def _show_latest(self) -> None:
        """Take the newest part's time and numbers; the state is the time."""
        latest = self.coordinator.data
        if latest is None:
            self._attr_image_last_updated = None
            self._attr_extra_state_attributes = {}
            return
        artifact = latest.artifact
        self._attr_image_last_updated = artifact.created_at
        attributes: dict[str, Any] = {
            "artifact_id": artifact.id,
            "family": artifact.family,
            "volume_mm3": artifact.metrics.volume_mm3,
        }
        self._attr_extra_state_attributes = attributes

    @override
    async def async_image(self) -> bytes | None:
        """Return the newest part's preview, as fetched with it."""
        latest = self.coordinator.data
        return latest.preview if latest is not None else None
