"""Config flow of the KITTY integration: connect Home Assistant to a KITTY router."""

from collections.abc import Mapping
import logging
from typing import Any, override

from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryData,
    ConfigSubentryFlow,
    SubentryFlowResult,
)
from homeassistant.const import CONF_LLM_HASS_API, CONF_NAME, CONF_PROMPT, CONF_TOKEN, CONF_URL
from homeassistant.core import callback
from homeassistant.helpers import config_validation as cv, llm
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import (
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    TemplateSelector,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
import probatio
from yarl import URL

from kittyai.client import KittyAuthError, KittyClient, KittyConnectionError, KittyError, ModelKind
from kittyai.contract import ServiceInfo

from .const import (
    CONF_PROFILE,
    DEFAULT_CONVERSATION_NAME,
    DEFAULT_CONVERSATION_OPTIONS,
    DOMAIN,
    NAME,
    PROFILES,
    SUBENTRY_CONVERSATION,
)

_LOGGER = logging.getLogger(__name__)

TOKEN_SELECTOR = TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD))
STEP_USER_DATA_SCHEMA = probatio.Schema(
    {
        probatio.Required(CONF_URL): TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
        probatio.Required(CONF_TOKEN): TOKEN_SELECTOR,
    }
)
STEP_REAUTH_DATA_SCHEMA = probatio.Schema({probatio.Required(CONF_TOKEN): TOKEN_SELECTOR})

# Every new entry comes with a conversation agent, as HA's own LLM integrations do.
DEFAULT_SUBENTRIES: list[ConfigSubentryData] = [
    ConfigSubentryData(
        subentry_type=SUBENTRY_CONVERSATION,
        # A dict: the flow result is sent to the frontend as JSON.
        data=dict(DEFAULT_CONVERSATION_OPTIONS),
        title=DEFAULT_CONVERSATION_NAME,
        unique_id=None,
    )
]


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
    # 1.2: entries come with a default conversation agent subentry.
    MINOR_VERSION = 2

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
                return self.async_create_entry(
                    title=NAME, data=user_input, subentries=DEFAULT_SUBENTRIES
                )
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
            return self.async_create_entry(
                title=NAME, data=self._discovered_data, subentries=DEFAULT_SUBENTRIES
            )
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

    @classmethod
    @callback
    @override
    def async_get_supported_subentry_types(
        cls, config_entry: ConfigEntry
    ) -> dict[str, type[ConfigSubentryFlow]]:
        """Return the subentries a KITTY entry has: its conversation agents."""
        return {SUBENTRY_CONVERSATION: KittyConversationFlow}

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


class KittyConversationFlow(ConfigSubentryFlow):
    """Add or change a KITTY conversation agent: its tools, instructions and routing."""

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Add an agent, starting from the default one."""
        if user_input is not None:
            return self.async_create_entry(
                title=user_input.pop(CONF_NAME), data=_agent_options(user_input)
            )
        schema = {probatio.Required(CONF_NAME, default=DEFAULT_CONVERSATION_NAME): str}
        return await self._async_show_options("user", schema, DEFAULT_CONVERSATION_OPTIONS)

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Change an agent; its name is changed on its device."""
        subentry = self._get_reconfigure_subentry()
        if user_input is not None:
            return self.async_update_and_abort(
                self._get_entry(), subentry, data=_agent_options(user_input)
            )
        return await self._async_show_options("reconfigure", {}, subentry.data)

    async def _async_show_options(
        self, step_id: str, schema: dict[Any, Any], options: Mapping[str, Any]
    ) -> SubentryFlowResult:
        """Show the agent's options, with the LLM APIs and profiles available now."""
        apis = llm.async_get_apis(self.hass)
        known_apis = {api.id for api in apis}
        suggested = {
            **options,
            # An API whose integration is gone can no longer be selected.
            CONF_LLM_HASS_API: [
                api for api in options.get(CONF_LLM_HASS_API, []) if api in known_apis
            ],
        }
        profiles = await self._async_profiles()
        if (current := options.get(CONF_PROFILE)) and current not in profiles:
            # Keep a backend the router no longer lists, so the form shows what is set.
            profiles.append(current)
        schema |= {
            probatio.Optional(CONF_LLM_HASS_API): SelectSelector(
                SelectSelectorConfig(
                    options=[SelectOptionDict(value=api.id, label=api.name) for api in apis],
                    multiple=True,
                )
            ),
            probatio.Optional(CONF_PROMPT): TemplateSelector(),
            probatio.Required(CONF_PROFILE): SelectSelector(
                SelectSelectorConfig(options=profiles, translation_key=CONF_PROFILE)
            ),
        }
        return self.async_show_form(
            step_id=step_id,
            data_schema=self.add_suggested_values_to_schema(probatio.Schema(schema), suggested),
        )

    async def _async_profiles(self) -> list[str]:
        """Return the router's profiles and backends; its three profiles if it cannot tell."""
        entry = self._get_entry()
        client = KittyClient(
            async_get_clientsession(self.hass), entry.data[CONF_URL], entry.data[CONF_TOKEN]
        )
        try:
            models = await client.list_models()
        except KittyError as err:
            _LOGGER.debug("Offering the default profiles: %s", err)
            return list(PROFILES)
        # Profiles first: they are what most agents should use.
        return [model.id for model in models if model.kind is ModelKind.PROFILE] + [
            model.id for model in models if model.kind is ModelKind.BACKEND
        ]


def _agent_options(user_input: dict[str, Any]) -> dict[str, Any]:
    """Return what a form stores: no LLM API key when none is selected, as core does."""
    if not user_input.get(CONF_LLM_HASS_API):
        user_input.pop(CONF_LLM_HASS_API, None)
    return user_input
