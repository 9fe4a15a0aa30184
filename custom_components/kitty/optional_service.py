"""The KITTY services an entry may use besides the router: their clients, coordinators, errors.

Each such service (CAD, knowledge, orchestrator) is named by a section of the entry's
options. Its coordinator reads it when the entry loads and follows what it pushes over
MQTT; a slow poll covers a broker that was away.
"""

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
import logging
from typing import TYPE_CHECKING, Any, ClassVar, Final, override

from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_TOKEN, CONF_URL
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed
from pydantic import BaseModel, ValidationError

from kittyai.catalog import ServiceName
from kittyai.client import KittyAuthError, KittyClient, KittyError, KittyRequestError
from kittyai.contract import AVAILABILITY, Availability, TopicSpec

from .const import DOMAIN
from .coordinator import warn_contract_breach

if TYPE_CHECKING:
    from . import KittyConfigEntry

_LOGGER = logging.getLogger(__name__)

# MQTT tells of every change: polling only covers a broker that was away.
SAFETY_INTERVAL: Final = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class ServiceErrorKeys:
    """The translation keys of what can go wrong with one service."""

    # A refusal the service explains, with no message of its own in Home Assistant.
    rejected: str
    invalid_auth: str
    unavailable: str
    # An action that needs the service while no loaded entry has one.
    not_configured: str
    # The service's refusals that have a message of their own, by their error code.
    by_code: Mapping[str, str] = field(default_factory=dict)


def optional_service_client[ClientT: KittyClient](
    hass: HomeAssistant, options: Mapping[str, Any], section: str, client_type: type[ClientT]
) -> ClientT | None:
    """Return the client of the service an options section names; None without one."""
    service = options.get(section) or {}
    if not service.get(CONF_URL):
        return None
    return client_type(
        async_get_clientsession(hass), service[CONF_URL], service.get(CONF_TOKEN, "")
    )


@callback
def loaded_service[CoordinatorT: OptionalServiceCoordinator[Any, Any]](
    hass: HomeAssistant, coordinator_type: type[CoordinatorT]
) -> CoordinatorT | None:
    """Return the service of this type of the first loaded KITTY entry that has one."""
    entries: list[KittyConfigEntry] = hass.config_entries.async_loaded_entries(DOMAIN)
    return next(
        (
            service
            for entry in entries
            for service in entry.runtime_data.optional_services
            if isinstance(service, coordinator_type)
        ),
        None,
    )


@callback
def required_service[CoordinatorT: OptionalServiceCoordinator[Any, Any]](
    hass: HomeAssistant, coordinator_type: type[CoordinatorT]
) -> CoordinatorT:
    """Return the service of this type of a loaded KITTY entry; refuse when none has one."""
    if (service := loaded_service(hass, coordinator_type)) is None:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key=coordinator_type.error_keys.not_configured,
        )
    return service


@contextmanager
def translated_service_errors(client: KittyClient, keys: ServiceErrorKeys) -> Iterator[None]:
    """Turn a service client's errors into Home Assistant's, with translated messages."""
    try:
        yield
    except KittyRequestError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key=keys.by_code.get(err.code, keys.rejected),
            translation_placeholders={"error": err.message},
        ) from err
    except KittyAuthError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key=keys.invalid_auth,
            translation_placeholders={"url": str(client.url)},
        ) from err
    except KittyError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key=keys.unavailable,
            translation_placeholders={"url": str(client.url), "error": str(err)},
        ) from err


class OptionalServiceCoordinator[ClientT: KittyClient, DataT](DataUpdateCoordinator[DataT]):
    """Keeps what Home Assistant shows of one optional service, read through its client."""

    config_entry: ConfigEntry
    service: ClassVar[ServiceName]
    # The service as logs and task names call it, e.g. "CAD".
    label: ClassVar[str]
    error_keys: ClassVar[ServiceErrorKeys]

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry, client: ClientT) -> None:
        """Follow the service `client` talks to."""
        super().__init__(
            hass,
            _LOGGER,
            config_entry=entry,
            name=f"{DOMAIN} {self.label}",
            update_interval=SAFETY_INTERVAL,
            always_update=False,
        )
        self.client = client

    async def async_start(self) -> None:
        """Read the service without holding up setup; subclasses follow its topics too."""
        self.config_entry.async_create_task(
            self.hass, self.async_refresh(), f"KITTY {self.label} first refresh", eager_start=True
        )

    async def _async_follow(
        self,
        spec: TopicSpec,
        handler: Callable[[mqtt.ReceiveMessage], None],
        topic: str | None = None,
    ) -> None:
        """Pass the messages of one of the service's topics to `handler` while loaded.

        `topic` is the filter to subscribe to, e.g. `spec.wildcard` for a topic per
        object; by default the service's own topic of `spec`.
        """
        self.config_entry.async_on_unload(
            await mqtt.async_subscribe(
                self.hass, topic or spec.topic(self.service), handler, qos=spec.qos
            )
        )

    async def _async_follow_availability(self) -> None:
        """Ask the service again whenever it goes offline, so its entities do not go stale.

        What it showed turns unavailable once the service fails to answer.
        """

        @callback
        def _async_handle_availability(msg: mqtt.ReceiveMessage) -> None:
            if msg.payload == Availability.OFFLINE:
                self._async_refresh_in_background()

        await self._async_follow(AVAILABILITY, _async_handle_availability)

    @override
    async def _async_update_data(self) -> DataT:
        """Ask the service; one that does not answer makes the data unavailable."""
        try:
            return await self._async_fetch()
        except KittyError as err:
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key=self.error_keys.unavailable,
                translation_placeholders={"url": str(self.client.url), "error": str(err)},
            ) from err

    async def _async_fetch(self) -> DataT:
        """Return what the service says now."""
        raise NotImplementedError

    @callback
    def _async_refresh_in_background(self) -> None:
        """Ask the service again, without holding up the MQTT message that said to."""
        self.config_entry.async_create_background_task(
            self.hass, self.async_request_refresh(), f"KITTY {self.label} refresh"
        )

    @staticmethod
    def _payload[M: BaseModel](model: type[M], msg: mqtt.ReceiveMessage) -> M | None:
        """Return a payload as `model`; None, with a warning, for one that breaks the contract."""
        try:
            return model.model_validate_json(msg.payload)
        except ValidationError:
            warn_contract_breach(msg)
            return None
