"""Config flow of the KITTY integration: connect Home Assistant to a KITTY router."""

from collections.abc import Mapping
import logging
from typing import Any, override

from homeassistant.config_entries import ConfigEntry, ConfigFlow, ConfigFlowResult
from homeassistant.const import CONF_TOKEN, CONF_URL
from homeassistant.core import callback
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import TextSelector, TextSelectorConfig, TextSelectorType
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
import probatio
from yarl import URL

from kittyai.client import KittyAuthError, KittyClient, KittyConnectionError
from kittyai.contract import ServiceInfo

from .const import DOMAIN, NAME

_LOGGER = logging.getLogger(__name__)

TOKEN_SELECTOR = TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD))
STEP_USER_DATA_SCHEMA = probatio.Schema(
    {
        probatio.Required(CONF_URL): TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
        probatio.Required(CONF_TOKEN): TOKEN_SELECTOR,
    }
)
STEP_REAUTH_DATA_SCHEMA = probatio.Schema({probatio.Required(CONF_TOKEN): TOKEN_SELECTOR})


def _reloads_on_update(entry: ConfigEntry | None) -> bool:
    """Return whether an entry reloads by itself when a flow changes its data.

    A loaded entry has an update listener that reloads it, and HA reports flows
    that reload such an entry a second time. An entry that failed to set up has
    no listener, so the flow has to reload it.
    """
    return entry is not None and bool(entry.update_listeners)


class KittyConfigFlow(ConfigFlow, domain=DOMAIN):
    """Set up KITTY by URL and token, or from the router app's discovery."""

    VERSION = 1

    _discovery: HassioServiceInfo
    _discovered_data: dict[str, str]

    @override
    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the router's URL and token."""
        errors: dict[str, str] = {}
        if user_input is not None:
            info, errors = await self._async_validate(user_input)
            if info is not None:
                await self.async_set_unique_id(info.instance_id)
                self._abort_if_unique_id_configured()
                return self.async_create_entry(title=NAME, data=user_input)
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(STEP_USER_DATA_SCHEMA, user_input),
            errors=errors,
        )

    @override
    async def async_step_hassio(self, discovery_info: HassioServiceInfo) -> ConfigFlowResult:
        """Handle the discovery the KITTY Router app sends through the Supervisor."""
        config = discovery_info.config
        data = {
            CONF_URL: str(URL.build(scheme="http", host=config["host"], port=config["port"])),
            CONF_TOKEN: config["token"],
        }
        info, errors = await self._async_validate(data)
        if info is None:
            return self.async_abort(reason=errors["base"])
        entry = await self.async_set_unique_id(info.instance_id)
        # A known router that moved (new app hostname, port or token) is updated.
        self._abort_if_unique_id_configured(
            updates=data, reload_on_update=not _reloads_on_update(entry)
        )
        self._discovery = discovery_info
        self._discovered_data = data
        self.context["title_placeholders"] = {"name": discovery_info.name}
        self.context["configuration_url"] = (
            f"homeassistant://hassio/addon/{discovery_info.slug}/info"
        )
        return await self.async_step_hassio_confirm()

    async def async_step_hassio_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Let the user confirm the discovered router."""
        if user_input is not None:
            return self.async_create_entry(title=NAME, data=self._discovered_data)
        self._set_confirm_only()
        return self.async_show_form(
            step_id="hassio_confirm", description_placeholders={"addon": self._discovery.name}
        )

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """Start reauthentication after the router rejected the token."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for a new token and test it against the configured router."""
        errors: dict[str, str] = {}
        if user_input is not None:
            entry = self._get_reauth_entry()
            data = {**entry.data, **user_input}
            info, errors = await self._async_validate(data)
            if info is not None:
                await self.async_set_unique_id(info.instance_id)
                self._abort_if_unique_id_mismatch()
                return self._async_update_entry_and_abort(entry, data)
        return self.async_show_form(
            step_id="reauth_confirm", data_schema=STEP_REAUTH_DATA_SCHEMA, errors=errors
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the URL and token of the configured router."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            info, errors = await self._async_validate(user_input)
            if info is not None:
                await self.async_set_unique_id(info.instance_id)
                self._abort_if_unique_id_mismatch()
                return self._async_update_entry_and_abort(entry, user_input)
        return self.async_show_form(
            step_id="reconfigure",
            # The token is not sent back to the browser: it has to be entered again.
            data_schema=self.add_suggested_values_to_schema(
                STEP_USER_DATA_SCHEMA, user_input or {CONF_URL: entry.data[CONF_URL]}
            ),
            errors=errors,
        )

    async def _async_validate(
        self, data: Mapping[str, Any]
    ) -> tuple[ServiceInfo | None, dict[str, str]]:
        """Ask the router who it is; return its info, or the error to show."""
        try:
            url = cv.url(data[CONF_URL])
        except probatio.Invalid:
            return None, {"base": "invalid_url"}
        client = KittyClient(async_get_clientsession(self.hass), url, data[CONF_TOKEN])
        try:
            return await client.get_info(), {}
        except KittyConnectionError:
            return None, {"base": "cannot_connect"}
        except KittyAuthError:
            return None, {"base": "invalid_auth"}
        except Exception:
            _LOGGER.exception("Unexpected answer from %s", url)
            return None, {"base": "unknown"}

    @callback
    def _async_update_entry_and_abort(
        self, entry: ConfigEntry, data: Mapping[str, Any]
    ) -> ConfigFlowResult:
        """Store new connection data and make the entry use it."""
        if _reloads_on_update(entry):
            return self.async_update_and_abort(entry, data=data)
        return self.async_update_reload_and_abort(entry, data=data)
