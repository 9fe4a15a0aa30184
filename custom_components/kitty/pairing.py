"""Pairing with OctoPrint through its AppKeys plugin, as HA core's OctoPrint integration does.

KITTY asks OctoPrint for a key; OctoPrint shows the request to its users, and the
key arrives once one of them allows it. The flows show a progress step meanwhile.
"""

import asyncio
import logging
from typing import Final

from homeassistant.core import HomeAssistant
from homeassistant.helpers.aiohttp_client import async_get_clientsession

from kittyai.printers.base import PrinterAuthError, PrinterConnectionError, PrinterError
from kittyai.printers.octoprint import app_keys_available, poll_app_key, request_app_key

from .const import APP_NAME

_LOGGER = logging.getLogger(__name__)

# How long the user has to allow the request in OctoPrint.
PAIRING_TIMEOUT_S: Final = 300.0
# OctoPrint drops a request nobody asks about for 5 s.
PAIRING_POLL_S: Final = 1.0


class PairingError(Exception):
    """OctoPrint cannot take a pairing request; `key` is the flow error to show."""

    def __init__(self, key: str) -> None:
        """Carry the flow's error key."""
        super().__init__(key)
        self.key = key


class AppKeysPairing:
    """One request for an API key that waits for a user of OctoPrint to decide."""

    def __init__(self, hass: HomeAssistant, url: str, token: str) -> None:
        """Wait for the decision on the request `token` names."""
        self.url = url
        self.task: asyncio.Task[str] = hass.async_create_task(
            self._async_wait_for_key(hass, token), f"OctoPrint pairing with {url}"
        )

    def outcome(self) -> tuple[str | None, str | None]:
        """Return the API key, or the error key of a request that got none; once done."""
        try:
            return self.task.result(), None
        except PrinterAuthError:
            return None, "pairing_denied"
        except TimeoutError:
            return None, "pairing_timeout"
        except PrinterError:
            return None, "cannot_connect"

    async def _async_wait_for_key(self, hass: HomeAssistant, token: str) -> str:
        """Ask OctoPrint about the request until it has a key, or the time is up."""
        session = async_get_clientsession(hass)
        async with asyncio.timeout(PAIRING_TIMEOUT_S):
            while True:
                if (api_key := await poll_app_key(session, self.url, token)) is not None:
                    return api_key
                await asyncio.sleep(PAIRING_POLL_S)


async def async_request_pairing(hass: HomeAssistant, url: str, user: str | None) -> AppKeysPairing:
    """Ask the OctoPrint at `url` for a key (for `user` only, if given); wait for it.

    Raise `PairingError` if the server offers no AppKeys or cannot be reached.
    """
    session = async_get_clientsession(hass)
    try:
        if not await app_keys_available(session, url):
            raise PairingError("app_keys_unavailable")
        token = await request_app_key(session, url, APP_NAME, user)
    except PrinterConnectionError as err:
        raise PairingError("cannot_connect") from err
    except PrinterError as err:
        # OctoPrint takes a few requests a minute from one address.
        _LOGGER.debug("OctoPrint at %s did not take the request: %s", url, err)
        raise PairingError("pairing_failed") from err
    return AppKeysPairing(hass, url, token)
