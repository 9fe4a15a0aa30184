"""Config flow of the KITTY integration: connect Home Assistant to a KITTY router."""

from collections.abc import Mapping
from dataclasses import dataclass
import logging
from typing import Any, Final, override

from homeassistant.components.camera import DOMAIN as CAMERA_DOMAIN
from homeassistant.components.fan import DOMAIN as FAN_DOMAIN
from homeassistant.components.scene.const import DOMAIN as SCENE_DOMAIN
from homeassistant.components.script.const import DOMAIN as SCRIPT_DOMAIN
from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryData,
    ConfigSubentryFlow,
    OptionsFlow,
    SubentryFlowResult,
)
from homeassistant.const import (
    CONF_API_KEY,
    CONF_LLM_HASS_API,
    CONF_NAME,
    CONF_PROMPT,
    CONF_TOKEN,
    CONF_URL,
    CONF_USERNAME,
)
from homeassistant.core import HomeAssistant, callback
from homeassistant.data_entry_flow import section
from homeassistant.helpers import config_validation as cv, llm
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import (
    BooleanSelector,
    EntitySelector,
    EntitySelectorConfig,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
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

from kittyai.catalog import SERVICES, ServiceName
from kittyai.client import KittyAuthError, KittyClient, KittyConnectionError, KittyError, ModelKind
from kittyai.contract import ServiceInfo
from kittyai.printers.base import PrinterAuthError, PrinterConnectionError, PrinterInfo, PrinterKind
from kittyai.printwatch import DEFAULT_INTERVAL_S

from .const import (
    CONF_CAMERA,
    CONF_DETECTOR,
    CONF_EXTRACTOR_DELAY,
    CONF_FINISH_SCENES,
    CONF_FUME_EXTRACTOR,
    CONF_INTERVAL,
    CONF_KIND,
    CONF_OBICO_URL,
    CONF_PAUSE_SCENES,
    CONF_PLUG_TEMPERATURE,
    CONF_POWER_PLUG,
    CONF_PRINTER_SUBENTRY_ID,
    CONF_PROFILE,
    CONF_SENSITIVITY,
    CONF_START_SCENES,
    CONF_WATCH,
    DEFAULT_CONVERSATION_NAME,
    DEFAULT_CONVERSATION_OPTIONS,
    DEFAULT_EXTRACTOR_DELAY,
    DEFAULT_PLUG_TEMPERATURE,
    DEFAULT_SENSITIVITY,
    DETECTOR_HEURISTIC,
    DETECTOR_OBICO,
    DETECTORS,
    DOMAIN,
    NAME,
    PROFILES,
    SECTION_CAD,
    SECTION_MONITOR,
    SECTION_ORCHESTRATOR,
    SECTION_RAG,
    SECTION_SCENES,
    SUBENTRY_CONVERSATION,
    SUBENTRY_PRINTER,
)
from .pairing import AppKeysPairing, PairingError, async_request_pairing
from .printer_coordinator import printer_client

_LOGGER = logging.getLogger(__name__)

TOKEN_SELECTOR = TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD))
STEP_USER_DATA_SCHEMA = probatio.Schema(
    {
        probatio.Required(CONF_URL): TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
        probatio.Required(CONF_TOKEN): TOKEN_SELECTOR,
    }
)
STEP_REAUTH_DATA_SCHEMA = probatio.Schema({probatio.Required(CONF_TOKEN): TOKEN_SELECTOR})

URL_SELECTOR = TextSelector(TextSelectorConfig(type=TextSelectorType.URL))
# OctoPrint: a key typed in, or none to pair through AppKeys (for one user, if named).
OCTOPRINT_KEY_SCHEMA = probatio.Schema(
    {
        probatio.Optional(CONF_API_KEY): TOKEN_SELECTOR,
        probatio.Optional(CONF_USERNAME): TextSelector(),
    }
)
# Moonraker needs a key only where it does not trust Home Assistant's address.
MOONRAKER_KEY_SCHEMA = probatio.Schema({probatio.Optional(CONF_API_KEY): TOKEN_SELECTOR})
PRINTER_URL_SCHEMA = probatio.Schema({probatio.Required(CONF_URL): URL_SELECTOR})
SCENE_SELECTOR = EntitySelector(
    EntitySelectorConfig(domain=[SCENE_DOMAIN, SCRIPT_DOMAIN], multiple=True)
)
# The print monitor: off, or a camera judged by a detector every few seconds.
MONITOR_SCHEMA = probatio.Schema(
    {
        probatio.Optional(CONF_WATCH, default=True): BooleanSelector(),
        # Empty: the printer's own webcam, if its print server names one.
        probatio.Optional(CONF_CAMERA): EntitySelector(EntitySelectorConfig(domain=CAMERA_DOMAIN)),
        probatio.Optional(CONF_INTERVAL, default=DEFAULT_INTERVAL_S): NumberSelector(
            NumberSelectorConfig(
                min=1, max=600, step=1, unit_of_measurement="s", mode=NumberSelectorMode.BOX
            )
        ),
        probatio.Optional(CONF_SENSITIVITY, default=DEFAULT_SENSITIVITY): NumberSelector(
            NumberSelectorConfig(min=0.25, max=4, step=0.05, mode=NumberSelectorMode.SLIDER)
        ),
        probatio.Optional(CONF_DETECTOR, default=DETECTOR_HEURISTIC): SelectSelector(
            SelectSelectorConfig(options=list(DETECTORS), translation_key=CONF_DETECTOR)
        ),
        probatio.Optional(CONF_OBICO_URL): URL_SELECTOR,
    }
)
# What the shop does around the printer's jobs.
SCENES_SCHEMA = probatio.Schema(
    {
        probatio.Optional(CONF_START_SCENES): SCENE_SELECTOR,
        probatio.Optional(CONF_PAUSE_SCENES): SCENE_SELECTOR,
        probatio.Optional(CONF_FINISH_SCENES): SCENE_SELECTOR,
        probatio.Optional(CONF_FUME_EXTRACTOR): EntitySelector(
            EntitySelectorConfig(domain=[SWITCH_DOMAIN, FAN_DOMAIN])
        ),
        probatio.Optional(CONF_EXTRACTOR_DELAY, default=DEFAULT_EXTRACTOR_DELAY): NumberSelector(
            NumberSelectorConfig(
                min=0, max=240, step=1, unit_of_measurement="min", mode=NumberSelectorMode.BOX
            )
        ),
        probatio.Optional(CONF_POWER_PLUG): EntitySelector(
            EntitySelectorConfig(domain=SWITCH_DOMAIN)
        ),
        probatio.Optional(CONF_PLUG_TEMPERATURE, default=DEFAULT_PLUG_TEMPERATURE): NumberSelector(
            NumberSelectorConfig(
                min=20, max=150, step=1, unit_of_measurement="°C", mode=NumberSelectorMode.BOX
            )
        ),
    }
)
# Collapsed: a printer works without them. A form sent without a section keeps what
# is stored; one sent with it replaces it.
OPTION_SECTIONS: dict[Any, Any] = {
    probatio.Optional(SECTION_MONITOR): section(MONITOR_SCHEMA, {"collapsed": True}),
    probatio.Optional(SECTION_SCENES): section(SCENES_SCHEMA, {"collapsed": True}),
}
PRINTER_SCHEMAS: dict[PrinterKind, probatio.Schema] = {
    PrinterKind.OCTOPRINT: PRINTER_URL_SCHEMA.extend(OCTOPRINT_KEY_SCHEMA.schema).extend(
        OPTION_SECTIONS
    ),
    PrinterKind.MOONRAKER: PRINTER_URL_SCHEMA.extend(MOONRAKER_KEY_SCHEMA.schema).extend(
        OPTION_SECTIONS
    ),
}
RECONFIGURE_PRINTER_SCHEMA = PRINTER_URL_SCHEMA.extend(MOONRAKER_KEY_SCHEMA.schema).extend(
    OPTION_SECTIONS
)
REAUTH_PRINTER_SCHEMAS: dict[PrinterKind, probatio.Schema] = {
    PrinterKind.OCTOPRINT: OCTOPRINT_KEY_SCHEMA,
    # Moonraker asked for a key, so one is needed now.
    PrinterKind.MOONRAKER: probatio.Schema({probatio.Required(CONF_API_KEY): TOKEN_SELECTOR}),
}


@dataclass(frozen=True, slots=True)
class OptionalService:
    """A KITTY service an entry may use besides the router: a section of its options."""

    section: str
    service: ServiceName
    # The error of a server that answers, but is not this service.
    wrong_service_error: str


# The entry's options: the CAD service, the knowledge service and the orchestrator,
# each in its own section.
OPTIONAL_SERVICES: Final = (
    OptionalService(SECTION_CAD, ServiceName.CAD, wrong_service_error="not_cad_service"),
    OptionalService(SECTION_RAG, ServiceName.RAG, wrong_service_error="not_rag_service"),
    OptionalService(
        SECTION_ORCHESTRATOR,
        ServiceName.ORCHESTRATOR,
        wrong_service_error="not_orchestrator_service",
    ),
)
# An empty URL turns the service off; an empty token keeps the one stored, which is
# never sent back to the browser.
SERVICE_SCHEMA = probatio.Schema(
    {
        probatio.Optional(CONF_URL): URL_SELECTOR,
        probatio.Optional(CONF_TOKEN): TOKEN_SELECTOR,
    }
)
# A form sent without a section keeps what is stored for it.
OPTIONS_SCHEMA = probatio.Schema(
    {
        probatio.Optional(optional.section): section(SERVICE_SCHEMA, {"collapsed": False})
        for optional in OPTIONAL_SERVICES
    }
)

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
    # Reauthentication of one printer: its subentry, and the pairing under way.
    _printer_subentry_id: str
    _pairing: AppKeysPairing

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
        """Start reauthentication after the router, or one of the printers, rejected a key.

        Subentries cannot reauthenticate themselves: a printer's coordinator starts
        the entry's reauthentication with the printer's subentry id in its data.
        """
        if (subentry_id := entry_data.get(CONF_PRINTER_SUBENTRY_ID)) is not None:
            self._printer_subentry_id = subentry_id
            return await self.async_step_reauth_printer()
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

    async def async_step_reauth_printer(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for a printer's new API key; without one, pair with OctoPrint again."""
        entry = self._get_reauth_entry()
        subentry = entry.subentries[self._printer_subentry_id]
        kind = PrinterKind(subentry.data[CONF_KIND])
        errors: dict[str, str] = {}
        if user_input is not None:
            if kind is PrinterKind.OCTOPRINT and not user_input.get(CONF_API_KEY):
                try:
                    self._pairing = await async_request_pairing(
                        self.hass, subentry.data[CONF_URL], user_input.get(CONF_USERNAME)
                    )
                except PairingError as err:
                    errors["base"] = err.key
                else:
                    return await self.async_step_reauth_pair()
            else:
                return await self._async_reauth_printer_with(user_input[CONF_API_KEY])
        return self._async_show_reauth_printer(errors)

    async def async_step_reauth_pair(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Wait while the user allows KITTY's request in OctoPrint."""
        if not self._pairing.task.done():
            return self.async_show_progress(
                step_id="reauth_pair",
                progress_action="pair",
                progress_task=self._pairing.task,
                description_placeholders={"url": self._pairing.url},
            )
        return self.async_show_progress_done(next_step_id="reauth_paired")

    async def async_step_reauth_paired(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Use the key OctoPrint gave, or ask again after a denial."""
        api_key, error = self._pairing.outcome()
        if api_key is None:
            return self._async_show_reauth_printer({"base": str(error)})
        return await self._async_reauth_printer_with(api_key)

    async def _async_reauth_printer_with(self, api_key: str) -> ConfigFlowResult:
        """Test a printer's new key; store it if it opens the same printer."""
        entry = self._get_reauth_entry()
        subentry = entry.subentries[self._printer_subentry_id]
        data = {**subentry.data, CONF_API_KEY: api_key}
        info, errors = await _async_printer_info(self.hass, data)
        if info is None:
            return self._async_show_reauth_printer(errors)
        if info.unique_id != subentry.unique_id:
            return self.async_abort(reason="printer_mismatch")
        # Asked first: the update starts the reload of an entry that reloads by itself.
        reloads = _reloads_on_update(entry)
        self.hass.config_entries.async_update_subentry(entry, subentry, data=data)
        if not reloads:
            self.hass.config_entries.async_schedule_reload(entry.entry_id)
        return self.async_abort(reason="reauth_successful")

    @callback
    def _async_show_reauth_printer(self, errors: dict[str, str]) -> ConfigFlowResult:
        """Show the form that asks for a printer's key, naming the printer."""
        subentry = self._get_reauth_entry().subentries[self._printer_subentry_id]
        return self.async_show_form(
            step_id="reauth_printer",
            data_schema=REAUTH_PRINTER_SCHEMAS[PrinterKind(subentry.data[CONF_KIND])],
            errors=errors,
            # `name` also titles Home Assistant's reauthentication dialog.
            description_placeholders={"name": subentry.title, "url": subentry.data[CONF_URL]},
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

    @staticmethod
    @callback
    @override
    def async_get_options_flow(config_entry: ConfigEntry) -> KittyOptionsFlow:
        """Return the flow that changes the entry's options."""
        return KittyOptionsFlow()

    @classmethod
    @callback
    @override
    def async_get_supported_subentry_types(
        cls, config_entry: ConfigEntry
    ) -> dict[str, type[ConfigSubentryFlow]]:
        """Return the subentries a KITTY entry has: its conversation agents and printers."""
        return {SUBENTRY_CONVERSATION: KittyConversationFlow, SUBENTRY_PRINTER: KittyPrinterFlow}

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


class KittyOptionsFlow(OptionsFlow):
    """Change what a KITTY entry uses besides the router: CAD, knowledge, the orchestrator.

    The entry's update listener reloads it with the new options.
    """

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for each service's URL and token, and test them."""
        errors: dict[str, str] = {}
        placeholders: dict[str, str] = {}
        if user_input is not None:
            options = dict(self.config_entry.options)
            for optional in OPTIONAL_SERVICES:
                if optional.section not in user_input:
                    continue
                stored_section = options.pop(optional.section, {})
                typed = dict(user_input[optional.section])
                if not typed.get(CONF_URL):
                    continue
                if not typed.get(CONF_TOKEN):
                    typed[CONF_TOKEN] = stored_section.get(CONF_TOKEN, "")
                if errors := await self._async_validate_service(optional, typed):
                    placeholders["service"] = SERVICES[optional.service].title
                    break
                options[optional.section] = typed
            if not errors:
                return self.async_create_entry(data=options)
        # What was typed is shown again; else what is stored.
        stored_options = self.config_entry.options
        shown = {
            optional.section: {CONF_URL: stored_options.get(optional.section, {}).get(CONF_URL, "")}
            for optional in OPTIONAL_SERVICES
        } | (user_input or {})
        suggested = {key: _without_token(section_input) for key, section_input in shown.items()}
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(OPTIONS_SCHEMA, suggested),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def _async_validate_service(
        self, optional: OptionalService, typed: dict[str, Any]
    ) -> dict[str, str]:
        """Ask the service who it is; return the error to show, if any.

        The URL is stored as it was checked, without a trailing slash.
        """
        try:
            typed[CONF_URL] = str(cv.url(typed[CONF_URL])).rstrip("/")
        except probatio.Invalid:
            return {"base": "invalid_url"}
        client = KittyClient(async_get_clientsession(self.hass), typed[CONF_URL], typed[CONF_TOKEN])
        try:
            info = await client.get_info()
        except KittyConnectionError:
            return {"base": "cannot_connect"}
        except KittyAuthError:
            return {"base": "invalid_auth"}
        except KittyError:
            # It answers, but not as a KITTY service.
            return {"base": optional.wrong_service_error}
        if info.service is not optional.service:
            return {"base": optional.wrong_service_error}
        return {}


def _without_token(section_input: Mapping[str, Any]) -> dict[str, Any]:
    """Return a service's section to show again: a token typed in is not sent back."""
    return {key: value for key, value in section_input.items() if key != CONF_TOKEN}


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


class KittyPrinterFlow(ConfigSubentryFlow):
    """Add or change one of the shop's printers: an OctoPrint or Moonraker server."""

    _pairing: AppKeysPairing
    # The monitor and scene sections sent with a form that pairs.
    _sections: dict[str, Any]

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Ask which print server the printer runs."""
        return self.async_show_menu(
            step_id="user", menu_options=[PrinterKind.OCTOPRINT, PrinterKind.MOONRAKER]
        )

    async def async_step_octoprint(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Ask for OctoPrint's URL and a key; without a key, pair through AppKeys."""
        if user_input is None or user_input.get(CONF_API_KEY):
            return await self._async_add(PrinterKind.OCTOPRINT, user_input)
        if (url := _printer_url(user_input[CONF_URL])) is None:
            return self._async_show_add(PrinterKind.OCTOPRINT, user_input, {"base": "invalid_url"})
        if errors := _section_errors(user_input):
            return self._async_show_add(PrinterKind.OCTOPRINT, user_input, errors)
        self._sections = _sections(user_input)
        try:
            self._pairing = await async_request_pairing(
                self.hass, url, user_input.get(CONF_USERNAME)
            )
        except PairingError as err:
            return self._async_show_add(PrinterKind.OCTOPRINT, user_input, {"base": err.key})
        return await self.async_step_pair()

    async def async_step_pair(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Wait while the user allows KITTY's request in OctoPrint."""
        if not self._pairing.task.done():
            return self.async_show_progress(
                step_id="pair",
                progress_action="pair",
                progress_task=self._pairing.task,
                description_placeholders={"url": self._pairing.url},
            )
        return self.async_show_progress_done(next_step_id="paired")

    async def async_step_paired(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Add the printer with the key OctoPrint gave, or offer the form again."""
        api_key, error = self._pairing.outcome()
        typed = {CONF_URL: self._pairing.url, **self._sections}
        if api_key is None:
            return self._async_show_add(PrinterKind.OCTOPRINT, typed, {"base": str(error)})
        return await self._async_add(PrinterKind.OCTOPRINT, {**typed, CONF_API_KEY: api_key})

    async def async_step_moonraker(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Ask for Moonraker's URL, and a key if it does not trust Home Assistant."""
        return await self._async_add(PrinterKind.MOONRAKER, user_input)

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Change a printer's URL, key, monitor or scenes; an empty key keeps the one stored."""
        subentry = self._get_reconfigure_subentry()
        errors: dict[str, str] = {}
        if user_input is not None:
            if (url := _printer_url(user_input[CONF_URL])) is None:
                errors["base"] = "invalid_url"
            elif not (errors := _section_errors(user_input)):
                data = {**subentry.data, CONF_URL: url, **_sections(user_input)}
                if api_key := user_input.get(CONF_API_KEY):
                    data[CONF_API_KEY] = api_key
                info, errors = await _async_printer_info(self.hass, data)
                if info is not None:
                    if info.unique_id != subentry.unique_id:
                        return self.async_abort(reason="unique_id_mismatch")
                    entry = self._get_entry()
                    if _reloads_on_update(entry):
                        return self.async_update_and_abort(entry, subentry, data=data)
                    return self.async_update_reload_and_abort(entry, subentry, data=data)
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                RECONFIGURE_PRINTER_SCHEMA,
                {CONF_URL: (user_input or subentry.data)[CONF_URL]}
                | _sections(subentry.data)
                | _sections(user_input or {}),
            ),
            errors=errors,
            description_placeholders={"printer": subentry.title},
        )

    async def _async_add(
        self, kind: PrinterKind, user_input: dict[str, Any] | None
    ) -> SubentryFlowResult:
        """Test the server, and add it unless the entry has it already."""
        if user_input is None:
            return self._async_show_add(kind, None, {})
        if (url := _printer_url(user_input[CONF_URL])) is None:
            return self._async_show_add(kind, user_input, {"base": "invalid_url"})
        if errors := _section_errors(user_input):
            return self._async_show_add(kind, user_input, errors)
        data = {CONF_KIND: kind.value, CONF_URL: url, **_sections(user_input)}
        if api_key := user_input.get(CONF_API_KEY):
            data[CONF_API_KEY] = api_key
        info, errors = await _async_printer_info(self.hass, data)
        if info is None:
            return self._async_show_add(kind, user_input, errors)
        if any(
            subentry.subentry_type == SUBENTRY_PRINTER and subentry.unique_id == info.unique_id
            for subentry in self._get_entry().subentries.values()
        ):
            return self.async_abort(reason="already_configured")
        return self.async_create_entry(title=info.name, data=data, unique_id=info.unique_id)

    @callback
    def _async_show_add(
        self, kind: PrinterKind, user_input: Mapping[str, Any] | None, errors: dict[str, str]
    ) -> SubentryFlowResult:
        """Show the form of a print server; a key typed in is not sent back."""
        suggested = {key: value for key, value in (user_input or {}).items() if key != CONF_API_KEY}
        return self.async_show_form(
            step_id=kind.value,
            data_schema=self.add_suggested_values_to_schema(PRINTER_SCHEMAS[kind], suggested),
            errors=errors,
        )


def _sections(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return the monitor and scene sections a form or a subentry holds."""
    return {key: data[key] for key in (SECTION_MONITOR, SECTION_SCENES) if key in data}


def _section_errors(user_input: dict[str, Any]) -> dict[str, str]:
    """Check the monitor's Obico URL, and store it without a trailing slash."""
    monitor = user_input.get(SECTION_MONITOR, {})
    if monitor.get(CONF_DETECTOR) != DETECTOR_OBICO:
        return {}
    if not monitor.get(CONF_OBICO_URL):
        return {"base": "obico_url_required"}
    if (url := _printer_url(monitor[CONF_OBICO_URL])) is None:
        return {"base": "invalid_url"}
    monitor[CONF_OBICO_URL] = url
    return {}


def _printer_url(url: str) -> str | None:
    """Return a print server's URL without a trailing slash; None if it is no http(s) URL."""
    try:
        return str(cv.url(url)).rstrip("/")
    except probatio.Invalid:
        return None


async def _async_printer_info(
    hass: HomeAssistant, data: Mapping[str, Any]
) -> tuple[PrinterInfo | None, dict[str, str]]:
    """Ask a print server who it is; return its info, or the error to show."""
    client = printer_client(hass, data)
    try:
        return await client.info(), {}
    except PrinterConnectionError:
        return None, {"base": "cannot_connect"}
    except PrinterAuthError:
        return None, {"base": "invalid_auth"}
    except Exception:
        _LOGGER.exception("Unexpected answer from %s", data[CONF_URL])
        return None, {"base": "unknown"}
    finally:
        await client.close()
