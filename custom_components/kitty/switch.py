"""Switch of the KITTY integration: remote mode, in which KITTY only reads."""

from typing import Any, override

from homeassistant.components.switch import SwitchEntity, SwitchEntityDescription
from homeassistant.const import STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.restore_state import RestoreEntity

from kittyai.catalog import ServiceName

from . import KittyConfigEntry
from .remote_mode import RemoteMode

# The switch only flips a flag in memory.
PARALLEL_UPDATES = 0

REMOTE_MODE = SwitchEntityDescription(key="remote_mode", translation_key="remote_mode")


async def async_setup_entry(
    hass: HomeAssistant,
    entry: KittyConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the remote mode switch to the router's device, the entry's hub."""
    coordinator = entry.runtime_data.coordinator
    async_add_entities(
        [
            KittyRemoteModeSwitch(
                entry.runtime_data.remote_mode,
                unique_id=f"{entry.unique_id}_{ServiceName.ROUTER}_{REMOTE_MODE.key}",
                device_info=DeviceInfo(
                    identifiers={coordinator.device_identifier(ServiceName.ROUTER)}
                ),
            )
        ]
    )


class KittyRemoteModeSwitch(SwitchEntity, RestoreEntity):
    """Sets the entry's remote mode, and restores it after a restart.

    It is no coordinator entity on purpose: remote mode is a safety setting that
    must stay settable (by hand or by a presence automation) while the router or
    the broker is down.
    """

    _attr_has_entity_name = True
    # Only a service call changes the flag: there is nothing to poll.
    _attr_should_poll = False
    entity_description = REMOTE_MODE

    def __init__(self, remote_mode: RemoteMode, *, unique_id: str, device_info: DeviceInfo) -> None:
        """Control `remote_mode`, the flag the agents obey."""
        self._remote_mode = remote_mode
        self._attr_unique_id = unique_id
        self._attr_device_info = device_info

    @override
    async def async_added_to_hass(self) -> None:
        """Take the state the switch had before Home Assistant restarted."""
        await super().async_added_to_hass()
        if (last_state := await self.async_get_last_state()) is not None:
            self._remote_mode.is_on = last_state.state == STATE_ON

    @property
    @override
    def is_on(self) -> bool:
        """Return whether remote mode is on."""
        return self._remote_mode.is_on

    @override
    async def async_turn_on(self, **kwargs: Any) -> None:
        """Turn remote mode on: from now on KITTY changes nothing."""
        self._remote_mode.is_on = True
        self.async_write_ha_state()

    @override
    async def async_turn_off(self, **kwargs: Any) -> None:
        """Turn remote mode off."""
        self._remote_mode.is_on = False
        self.async_write_ha_state()
