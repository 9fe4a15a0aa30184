"""The status of one of the shop's 3D printers, and the commands that change it.

One coordinator per printer subentry. OctoPrint is polled, faster while a job runs.
Moonraker pushes every change over its WebSocket; a slow poll is only the safety net
for a socket that went quiet. A printer that stops answering makes its entities
unavailable and is tried again and again; its outage is logged once when it starts
and once when it ends.
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
import logging
from pathlib import Path
from typing import Any, override

from homeassistant.config_entries import ConfigEntry, ConfigSubentry
from homeassistant.const import CONF_API_KEY, CONF_URL
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed

from kittyai.backoff import Backoff
from kittyai.printers.base import (
    PrinterAuthError,
    PrinterBusyError,
    PrinterClient,
    PrinterCommandError,
    PrinterError,
    PrinterFileNotFoundError,
    PrinterInfo,
    PrinterKind,
    PrinterState,
    PrinterStatus,
)
from kittyai.printers.moonraker import MoonrakerClient
from kittyai.printers.octoprint import OctoPrintClient

from .const import CONF_KIND, CONF_PRINTER_SUBENTRY_ID, DOMAIN

_LOGGER = logging.getLogger(__name__)

# OctoPrint pushes nothing HA can use: poll it, often while a job runs.
PRINTING_INTERVAL = timedelta(seconds=5)
IDLE_INTERVAL = timedelta(seconds=30)
# Moonraker pushes; a poll only runs after this long without a push.
PUSH_SAFETY_INTERVAL = timedelta(seconds=60)
# Reconnecting to a Moonraker WebSocket that dropped: from 1 s up to a minute.
RECONNECT_INITIAL_S = 1.0
RECONNECT_MAXIMUM_S = 60.0

# Who makes the device: the print server, as HA core's OctoPrint integration has it.
PRINT_SERVERS: Mapping[PrinterKind, str] = {
    PrinterKind.OCTOPRINT: "OctoPrint",
    PrinterKind.MOONRAKER: "Moonraker",
}

# The states a new job may start from.
READY_STATES = frozenset({PrinterState.IDLE, PrinterState.COMPLETE, PrinterState.CANCELLED})
# The states a job can be cancelled in.
CANCELLABLE_STATES = frozenset({PrinterState.PRINTING, PrinterState.PAUSING, PrinterState.PAUSED})


def printer_client(hass: HomeAssistant, data: Mapping[str, Any]) -> PrinterClient:
    """Return the client of the print server a printer subentry describes."""
    session = async_get_clientsession(hass)
    url: str = data[CONF_URL]
    if PrinterKind(data[CONF_KIND]) is PrinterKind.OCTOPRINT:
        return OctoPrintClient(session, url, data[CONF_API_KEY])
    return MoonrakerClient(session, url, data.get(CONF_API_KEY))


class PrinterCoordinator(DataUpdateCoordinator[PrinterStatus]):
    """Keeps one printer's status, and carries out the commands sent to it.

    `data` is None until the printer answered once. Every command is checked against
    the printer's state read just before, so a refused command sends nothing.
    """

    config_entry: ConfigEntry

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry, subentry: ConfigSubentry) -> None:
        """Prepare the client of `subentry`'s print server; nothing is sent yet."""
        self.subentry = subentry
        self.kind = PrinterKind(subentry.data[CONF_KIND])
        self.client = printer_client(hass, subentry.data)
        super().__init__(
            hass,
            _LOGGER,
            config_entry=entry,
            name=subentry.title,
            update_interval=PUSH_SAFETY_INTERVAL if self.client.pushes else IDLE_INTERVAL,
            # A poll that finds the printer unchanged writes no states.
            always_update=False,
        )
        # Who the print server is; None until it answered once.
        self.info: PrinterInfo | None = None
        self._reconnect = Backoff(initial=RECONNECT_INITIAL_S, maximum=RECONNECT_MAXIMUM_S)

    @property
    def unique_id(self) -> str:
        """Return what the unique ids of the printer's entities start with."""
        return f"{self.config_entry.unique_id}_printer_{self.subentry.unique_id}"

    @property
    def device_identifier(self) -> tuple[str, str]:
        """Return the device registry identifier of the printer."""
        return (DOMAIN, self.unique_id)

    @property
    def device_id(self) -> str:
        """Return the printer's device registry id; its device exists once started."""
        return dr.async_get_device_id_by_identifier(
            self.hass, self.device_identifier, config_entry_id=self.config_entry.entry_id
        )

    @property
    def online(self) -> bool:
        """Return whether the printer answered its last request."""
        return self.last_update_success and self.data is not None

    @callback
    def async_start(self) -> None:
        """Register the printer's device, read it for the first time, and follow it.

        The first read does not hold up the entry's setup: a printer that is switched
        off only makes its own entities unavailable.
        """
        self._async_update_device()
        entry = self.config_entry
        entry.async_create_task(
            self.hass, self.async_refresh(), f"{self.name} first refresh", eager_start=True
        )
        if self.client.pushes:
            entry.async_create_background_task(
                self.hass, self._async_listen(), f"{self.name} listen", eager_start=True
            )

    @override
    async def async_shutdown(self) -> None:
        """Stop polling and close the client's WebSocket."""
        await super().async_shutdown()
        await self.client.close()

    @override
    async def _async_update_data(self) -> PrinterStatus:
        """Read the printer's status (and, the first time, who it is)."""
        try:
            await self._async_ensure_info()
            status = await self.client.status()
        except PrinterAuthError as err:
            raise self._auth_failed(err) from err
        except PrinterError as err:
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="printer_unavailable",
                translation_placeholders={"printer": self.name, "error": str(err)},
            ) from err
        self._async_follow(status)
        return status

    async def _async_listen(self) -> None:
        """Take the pushed status until the entry unloads, reconnecting after drops."""
        while True:
            try:
                await self._async_ensure_info()
                await self.client.listen(self._async_handle_push)
            except PrinterAuthError as err:
                self.async_set_update_error(self._auth_failed(err))
                return
            except PrinterError as err:
                # A socket that drops is an outage like a poll that fails: logged once.
                self.async_set_update_error(
                    HomeAssistantError(
                        translation_domain=DOMAIN,
                        translation_key="printer_unavailable",
                        translation_placeholders={"printer": self.name, "error": str(err)},
                    )
                )
            except Exception:
                # Whatever went wrong, the printer is followed again after the delay.
                _LOGGER.exception("Unexpected error following %s", self.name)
            await asyncio.sleep(self._reconnect.next_delay())

    @callback
    def _async_handle_push(self, status: PrinterStatus) -> None:
        """Publish a status the print server pushed."""
        self._reconnect.reset()
        if not self.last_update_success:
            # The same words Home Assistant logs for a poll that recovers.
            _LOGGER.info("Fetching %s data recovered", self.name)
        self._async_follow(status)
        self.async_set_updated_data(status)

    async def _async_ensure_info(self) -> None:
        """Ask the print server who it is, once; refuse another server at the address."""
        if self.info is not None:
            return
        info = await self.client.info()
        if info.unique_id != self.subentry.unique_id:
            raise PrinterError(f"{self.subentry.data[CONF_URL]} is now another print server")
        self.info = info
        self._async_update_device()

    @callback
    def _async_follow(self, status: PrinterStatus) -> None:
        """Poll an OctoPrint that prints often; an idle one, or Moonraker, rarely."""
        if not self.client.pushes:
            self.update_interval = PRINTING_INTERVAL if status.busy else IDLE_INTERVAL

    def _auth_failed(self, err: PrinterAuthError) -> UpdateFailed:
        """Ask the user for the printer's new key, and stop asking the printer meanwhile.

        Home Assistant reauthenticates entries, not subentries: the KITTY entry's
        reauthentication starts, naming this printer, and asks for its key. Its
        success reloads the entry, and with it this printer.
        """
        self.update_interval = None
        self.config_entry.async_start_reauth(
            self.hass,
            context={"title_placeholders": {"name": self.name}},
            data={CONF_PRINTER_SUBENTRY_ID: self.subentry.subentry_id},
        )
        return UpdateFailed(
            translation_domain=DOMAIN,
            translation_key="printer_invalid_auth",
            translation_placeholders={"printer": self.name, "error": str(err)},
        )

    @callback
    def _async_update_device(self) -> None:
        """Register the printer's device on its subentry, or bring it up to date."""
        device_info = DeviceInfo(
            identifiers={self.device_identifier},
            name=self.subentry.title,
            manufacturer=PRINT_SERVERS[self.kind],
            configuration_url=self.subentry.data[CONF_URL],
        )
        if self.info is not None and self.info.version:
            device_info["sw_version"] = self.info.version
        dr.async_get(self.hass).async_get_or_create(
            config_entry_id=self.config_entry.entry_id,
            config_subentry_id=self.subentry.subentry_id,
            **device_info,
        )

    # -- commands ------------------------------------------------------------------------

    async def async_start_print(
        self, path: Path, *, nozzle: float | None = None, bed: float | None = None
    ) -> PrinterStatus:
        """Upload a local G-code file and print it; refuse while the printer is not ready.

        With `nozzle` or `bed`, the heaters are set to those targets first, so they
        warm up while the file uploads.
        """
        status = await self._async_status_now()
        if status.busy:
            raise self._refused("printer_busy", status)
        if status.state not in READY_STATES:
            raise self._refused("printer_not_ready", status)

        async def upload_and_start() -> PrinterStatus:
            if nozzle is not None or bed is not None:
                await self.client.set_targets(nozzle=nozzle, bed=bed)
            stored = await self.client.upload(path)
            return await self.client.start(stored.name)

        return await self._async_command("start", upload_and_start)

    async def async_pause(self) -> PrinterStatus:
        """Pause the running job."""
        status = await self._async_status_now()
        if status.state is not PrinterState.PRINTING:
            raise self._refused("not_printing", status)
        return await self._async_command("pause", self.client.pause)

    async def async_resume(self) -> PrinterStatus:
        """Resume the paused job."""
        status = await self._async_status_now()
        if status.state is not PrinterState.PAUSED:
            raise self._refused("not_paused", status)
        return await self._async_command("resume", self.client.resume)

    async def async_cancel(self) -> PrinterStatus:
        """Cancel the job, running or paused."""
        status = await self._async_status_now()
        if status.state not in CANCELLABLE_STATES:
            raise self._refused("no_job", status)
        return await self._async_command("cancel", self.client.cancel)

    async def _async_status_now(self) -> PrinterStatus:
        """Read the printer's status for a command: the last poll may be 30 s old."""
        return await self._async_command("status", self.client.status)

    async def _async_command(
        self, command: str, send: Callable[[], Awaitable[PrinterStatus]]
    ) -> PrinterStatus:
        """Send a command, publish the status it read back, and explain what failed."""
        try:
            status = await send()
        except PrinterBusyError as err:
            # The printer changed state between the check and the command.
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="command_refused",
                translation_placeholders={
                    "printer": self.name,
                    "command": command,
                    "error": str(err),
                },
            ) from err
        except PrinterAuthError as err:
            self.async_set_update_error(self._auth_failed(err))
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="printer_invalid_auth",
                translation_placeholders={"printer": self.name, "error": str(err)},
            ) from err
        except PrinterFileNotFoundError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="file_not_on_printer",
                translation_placeholders={
                    "printer": self.name,
                    "command": command,
                    "error": str(err),
                },
            ) from err
        except PrinterCommandError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="command_failed",
                translation_placeholders={
                    "printer": self.name,
                    "command": command,
                    "error": str(err),
                },
            ) from err
        except PrinterError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="printer_unavailable",
                translation_placeholders={"printer": self.name, "error": str(err)},
            ) from err
        self._async_follow(status)
        self.async_set_updated_data(status)
        return status

    def _refused(self, key: str, status: PrinterStatus) -> ServiceValidationError:
        """Return why a command does not fit the printer's state; nothing was sent."""
        return ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key=key,
            translation_placeholders={"printer": self.name, "state": status.state.value},
        )
