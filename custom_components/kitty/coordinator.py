"""Status of the KITTY services, pushed by the services over MQTT."""

from dataclasses import dataclass, replace
import logging
from typing import cast, override

from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_URL
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryNotReady
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator
from pydantic import ValidationError

from kittyai.catalog import SERVICES, ServiceName
from kittyai.contract import (
    AVAILABILITY,
    INFO,
    ROUTER_STATS,
    Availability,
    ServiceInfo,
    service_from_topic,
)
from kittyai.contract.routing import RouterStats

from .budget_issues import BudgetIssues
from .const import DOMAIN, NAME

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What the MQTT contract last said about one service; None while never seen."""

    availability: Availability | None = None
    info: ServiceInfo | None = None
    # Only the router publishes statistics.
    stats: RouterStats | None = None

    @property
    def online(self) -> bool:
        """Return whether the service announced itself online."""
        return self.availability is Availability.ONLINE


type KittyStatus = dict[ServiceName, ServiceStatus]


class KittyCoordinator(DataUpdateCoordinator[KittyStatus]):
    """Holds the status of every KITTY service and keeps the services' devices.

    The services push everything over the retained contract topics: a refresh has
    nothing to fetch, so there is no update interval and only MQTT messages replace
    the data. The router's statistics also keep the budget repair issues current.
    """

    config_entry: ConfigEntry

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry, router_info: ServiceInfo) -> None:
        """Start from what the router said over HTTP; the other services are unseen."""
        super().__init__(hass, _LOGGER, config_entry=entry, name=DOMAIN)
        self.data = {service: ServiceStatus() for service in SERVICES}
        self.data[ServiceName.ROUTER] = ServiceStatus(info=router_info)
        self.mqtt_connected = False
        self._budget_issues = BudgetIssues(hass)

    def device_identifier(self, service: ServiceName) -> tuple[str, str]:
        """Return the device registry identifier of a service of this KITTY."""
        return (DOMAIN, f"{self.config_entry.unique_id}_{service}")

    @callback
    def device_id(self, service: ServiceName) -> str:
        """Return the device registry id of a service's device, once registered."""
        return dr.async_get_device_id_by_identifier(
            self.hass, self.device_identifier(service), config_entry_id=self.config_entry.entry_id
        )

    @callback
    def async_register_devices(self) -> None:
        """Register a device per service: the router's first, the others link to it."""
        self._async_update_device(ServiceName.ROUTER)
        for service in SERVICES.keys() - {ServiceName.ROUTER}:
            self._async_update_device(service)

    @callback
    def _async_update_device(self, service: ServiceName) -> None:
        """Register the device of a service, or bring it up to date."""
        entry = self.config_entry
        device_info = DeviceInfo(
            identifiers={self.device_identifier(service)},
            name=SERVICES[service].title,
            manufacturer=NAME,
            entry_type=DeviceEntryType.SERVICE,
        )
        # Until a service announces itself, its device keeps the last known version.
        if info := self.data[service].info:
            device_info["sw_version"] = info.version
        if service is ServiceName.ROUTER:
            device_info["configuration_url"] = entry.data[CONF_URL]
        else:
            # The router is what the entry connects to; the apps are reached through it.
            device_info["via_device_id"] = self.device_id(ServiceName.ROUTER)
        dr.async_get(self.hass).async_get_or_create(config_entry_id=entry.entry_id, **device_info)

    @override
    async def _async_setup(self) -> None:
        """Wait for HA's MQTT client and subscribe to the contract topics."""
        if not await mqtt.async_wait_for_mqtt_client(self.hass):
            raise ConfigEntryNotReady(translation_domain=DOMAIN, translation_key="mqtt_unavailable")
        entry = self.config_entry
        entry.async_on_unload(
            mqtt.async_subscribe_connection_status(self.hass, self._async_mqtt_connection_changed)
        )
        self.mqtt_connected = mqtt.is_connected(self.hass)
        entry.async_on_unload(
            await mqtt.async_subscribe(
                self.hass,
                AVAILABILITY.wildcard,
                self._async_handle_availability,
                qos=AVAILABILITY.qos,
            )
        )
        entry.async_on_unload(
            await mqtt.async_subscribe(
                self.hass, INFO.wildcard, self._async_handle_info, qos=INFO.qos
            )
        )
        entry.async_on_unload(
            await mqtt.async_subscribe(
                self.hass,
                ROUTER_STATS.topic(ServiceName.ROUTER),
                self._async_handle_router_stats,
                qos=ROUTER_STATS.qos,
            )
        )
        entry.async_on_unload(self._budget_issues.async_clear)

    @override
    async def _async_update_data(self) -> KittyStatus:
        """Return the pushed status as it is."""
        return self.data

    @callback
    def _async_mqtt_connection_changed(self, connected: bool) -> None:
        """Track HA's broker connection: without it the status may be stale."""
        self.mqtt_connected = connected
        self.async_update_listeners()

    @callback
    def _async_handle_availability(self, msg: mqtt.ReceiveMessage) -> None:
        """Store an `online`/`offline` announcement (or the broker's last will)."""
        if (service := self._service_of(msg)) is None:
            return
        try:
            # Subscribed as UTF-8: HA decodes the payload (and drops what it cannot).
            availability = Availability(cast(str, msg.payload))
        except ValueError:
            warn_contract_breach(msg)
            return
        # Services re-announce themselves when HA comes online: only changes count,
        # so each outage is logged once when it starts and once when it ends.
        if availability is not self.data[service].availability:
            if availability is Availability.OFFLINE:
                _LOGGER.warning("%s is offline", SERVICES[service].title)
            else:
                _LOGGER.info("%s is online", SERVICES[service].title)
            self._async_set_status(service, replace(self.data[service], availability=availability))

    @callback
    def _async_handle_info(self, msg: mqtt.ReceiveMessage) -> None:
        """Store who a service is, and keep its device's software version current."""
        if (service := self._service_of(msg)) is None:
            return
        try:
            info = ServiceInfo.model_validate_json(msg.payload)
        except ValidationError:
            warn_contract_breach(msg)
            return
        if info.service is not service:  # an info must describe its topic's service
            warn_contract_breach(msg)
            return
        if info != self.data[service].info:
            self._async_set_status(service, replace(self.data[service], info=info))
            self._async_update_device(service)

    @callback
    def _async_handle_router_stats(self, msg: mqtt.ReceiveMessage) -> None:
        """Store the router's statistics and keep the budget issues in line with them."""
        try:
            stats = RouterStats.model_validate_json(msg.payload)
        except ValidationError:
            warn_contract_breach(msg)
            return
        router = self.data[ServiceName.ROUTER]
        if stats != router.stats:
            self._async_set_status(ServiceName.ROUTER, replace(router, stats=stats))
            self._budget_issues.async_update(stats.budgets)

    @callback
    def _async_set_status(self, service: ServiceName, status: ServiceStatus) -> None:
        """Publish a new status of one service to the entities."""
        self.async_set_updated_data({**self.data, service: status})

    @staticmethod
    def _service_of(msg: mqtt.ReceiveMessage) -> ServiceName | None:
        """Return the service a message is about; unknown (newer) services are skipped."""
        service = service_from_topic(msg.topic)
        if service is None:
            _LOGGER.debug("Ignoring %s: not a service this integration knows", msg.topic)
        return service


def warn_contract_breach(msg: mqtt.ReceiveMessage) -> None:
    """Log a payload that breaks the MQTT contract; it changes nothing."""
    _LOGGER.warning(
        "Ignoring a payload on %s that breaks the KITTY contract: %.200r",
        msg.topic,
        msg.payload,
    )
