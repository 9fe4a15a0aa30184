"""Supervisor discovery: how an app makes KITTY's config flow appear in HA."""

import asyncio
import logging

from kittyai.backoff import Backoff, sleep_unless_set
from kittyai.supervisor import SupervisorClient, SupervisorError

_LOGGER = logging.getLogger(__name__)

# Long enough for an announcement in flight to finish, so it can be withdrawn.
STOP_TIMEOUT_SECONDS = 5.0


class DiscoveryAnnouncer:
    """Announces this service's URL and token until it succeeds; withdraws it on stop."""

    def __init__(self, supervisor: SupervisorClient, *, port: int, api_token: str) -> None:
        """Announce the service listening on `port` of this app's host name."""
        self._supervisor = supervisor
        self._port = port
        self._api_token = api_token
        # Not urgent: a Supervisor that keeps refusing needs a person, not a flood.
        self._backoff = Backoff(initial=1.0, maximum=300.0)
        self._uuid: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()

    def start(self) -> None:
        """Start announcing in the background; failures are retried, never raised."""
        self._task = asyncio.create_task(self._announce(), name="kitty-discovery")

    async def stop(self) -> None:
        """Stop retrying and withdraw the announcement, if one was made."""
        if self._task is not None:
            self._stop_requested.set()
            try:
                await asyncio.wait_for(self._task, STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                _LOGGER.warning("The Supervisor did not answer the discovery announcement")
            self._task = None
        if self._uuid is None:
            return
        try:
            await self._supervisor.remove_discovery(self._uuid)
        except SupervisorError as err:
            _LOGGER.warning("Could not withdraw the discovery announcement: %s", err)
        else:
            _LOGGER.info("Withdrew the discovery announcement %s", self._uuid)
        self._uuid = None

    async def _announce(self) -> None:
        while not self._stop_requested.is_set():
            try:
                info = await self._supervisor.get_self_info()
                self._uuid = await self._supervisor.announce_discovery(
                    {"host": info.hostname, "port": self._port, "token": self._api_token}
                )
            except SupervisorError as err:
                delay = self._backoff.next_delay()
                _LOGGER.warning(
                    "Discovery announcement failed (%s); retrying in %.0f s", err, delay
                )
                await sleep_unless_set(self._stop_requested, delay)
            else:
                _LOGGER.info(
                    "Announced %s:%s to Home Assistant (discovery %s)",
                    info.hostname,
                    self._port,
                    self._uuid,
                )
                return
