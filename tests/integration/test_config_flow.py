"""Config flow against real KITTY routers: user, Supervisor discovery, reauth, reconfigure."""

from homeassistant.config_entries import SOURCE_HASSIO, SOURCE_USER, ConfigEntryState
from homeassistant.const import CONF_TOKEN, CONF_URL
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    get_schema_suggested_value,
)

from custom_components.kitty.const import DOMAIN, NAME
from tests.helpers.services import ServiceProcess
from tests.integration.common import kitty_entry, router_info, wait_for

# Every test that ends with a stored entry sets it up for real, which needs MQTT.
with_mqtt = pytest.mark.usefixtures("mqtt_entry")

# HA logs this when a flow reloads an entry whose update listener reloads it too.
DOUBLE_RELOAD = "should use it for scheduling a reload"


def hassio_info(host: str, port: int, token: str) -> HassioServiceInfo:
    """Return what the Supervisor hands over when the router app announces itself."""
    return HassioServiceInfo(
        config={"host": host, "port": port, "token": token},
        name="KITTY Router",
        slug="kitty_router",
        uuid="0123456789abcdef",
    )


async def start_user_flow(hass: HomeAssistant) -> str:
    """Open the user step and return the flow id."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {}
    return result["flow_id"]


async def loaded(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Wait until the entry (re)loaded with its new data."""
    await wait_for(hass, lambda: entry.state is ConfigEntryState.LOADED, "the entry to load")


@with_mqtt
async def test_user_creates_entry(hass: HomeAssistant, router: ServiceProcess) -> None:
    """The router's URL and token make an entry named after KITTY, keyed by its instance id."""
    flow_id = await start_user_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_URL: router.url, CONF_TOKEN: router.token}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == NAME
    assert result["data"] == {CONF_URL: router.url, CONF_TOKEN: router.token}
    entry = result["result"]
    assert entry.unique_id == router_info(router).instance_id
    await loaded(hass, entry)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("closed_port", "cannot_connect"),
        ("wrong_token", "invalid_auth"),
        ("not_a_url", "invalid_url"),
    ],
)
@with_mqtt
async def test_user_errors_then_recovers(
    hass: HomeAssistant, router: ServiceProcess, closed_url: str, case: str, error: str
) -> None:
    """An error re-shows the form with what was typed; fixing it creates the entry."""
    url, token = {
        "closed_port": (closed_url, router.token),
        "wrong_token": (router.url, "wrong-token"),
        "not_a_url": ("router.local", router.token),
    }[case]
    flow_id = await start_user_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_URL: url, CONF_TOKEN: token}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": error}
    assert get_schema_suggested_value(result["data_schema"].schema, CONF_URL) == url

    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_URL: router.url, CONF_TOKEN: router.token}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


@with_mqtt
async def test_user_not_kitty_is_unknown(
    hass: HomeAssistant,
    router: ServiceProcess,
    not_kitty_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that answers, but not like KITTY, is an unexpected error worth a log."""
    flow_id = await start_user_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_URL: not_kitty_url, CONF_TOKEN: router.token}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "unknown"}
    assert f"Unexpected answer from {not_kitty_url}" in caplog.text

    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_URL: router.url, CONF_TOKEN: router.token}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_same_router_twice_aborts(hass: HomeAssistant, router: ServiceProcess) -> None:
    """A router that is configured already, even under another URL, is not added again."""
    kitty_entry(router, url="http://kitty.invalid:8770").add_to_hass(hass)
    flow_id = await start_user_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_URL: router.url, CONF_TOKEN: router.token}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


@with_mqtt
async def test_hassio_discovery_creates_entry(hass: HomeAssistant, router: ServiceProcess) -> None:
    """The router app's discovery asks for a confirmation naming the app, then adds it."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_HASSIO},
        data=hassio_info("127.0.0.1", router.port, router.token),
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "hassio_confirm"
    assert result["description_placeholders"] == {"addon": "KITTY Router"}
    flow = hass.config_entries.flow.async_get(result["flow_id"])
    assert flow["context"]["title_placeholders"] == {"name": "KITTY Router"}
    assert flow["context"]["configuration_url"] == "homeassistant://hassio/addon/kitty_router/info"

    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == NAME
    assert result["data"] == {CONF_URL: router.url, CONF_TOKEN: router.token}
    assert result["result"].unique_id == router_info(router).instance_id
    await loaded(hass, result["result"])


@with_mqtt
async def test_hassio_discovery_moves_retrying_entry(
    hass: HomeAssistant, router: ServiceProcess, closed_url: str
) -> None:
    """A router that moved and is discovered again: the waiting entry follows and loads."""
    entry = kitty_entry(router, url=closed_url, token="old-token")
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY

    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_HASSIO},
        data=hassio_info("127.0.0.1", router.port, router.token),
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data == {CONF_URL: router.url, CONF_TOKEN: router.token}
    await loaded(hass, entry)


@with_mqtt
async def test_hassio_discovery_updates_loaded_entry(
    hass: HomeAssistant, router: ServiceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A loaded entry takes the discovered URL and reloads once, through its listener."""
    entry = kitty_entry(router, url=f"{router.url}/")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)

    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_HASSIO},
        data=hassio_info("127.0.0.1", router.port, router.token),
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data[CONF_URL] == router.url
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    router_device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, f"{entry.unique_id}_router"), entry.entry_id
    )
    assert router_device is not None
    assert router_device.configuration_url == router.url
    assert DOUBLE_RELOAD not in caplog.text


@pytest.mark.parametrize(
    ("case", "reason"), [("closed_port", "cannot_connect"), ("wrong_token", "invalid_auth")]
)
async def test_hassio_discovery_of_unreachable_router_aborts(
    hass: HomeAssistant, router: ServiceProcess, closed_url: str, case: str, reason: str
) -> None:
    """A discovered router that does not answer, or not to its token, is not offered."""
    port, token = {
        "closed_port": (int(closed_url.rsplit(":", 1)[1]), router.token),
        "wrong_token": (router.port, "wrong-token"),
    }[case]
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=hassio_info("127.0.0.1", port, token)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == reason


async def test_hassio_discovery_of_not_kitty_aborts(
    hass: HomeAssistant, not_kitty_url: str
) -> None:
    """A discovered address that answers, but not like KITTY, is not offered."""
    port = int(not_kitty_url.rsplit(":", 1)[1])
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=hassio_info("127.0.0.1", port, "token")
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unknown"


@with_mqtt
async def test_reauth_after_token_change(hass: HomeAssistant, router: ServiceProcess) -> None:
    """A rejected token starts reauth; a wrong one is refused, the right one loads the entry."""
    entry = kitty_entry(router, token="revoked-token")
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    [flow] = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert flow["context"]["source"] == "reauth"
    assert flow["step_id"] == "reauth_confirm"

    result = await hass.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_TOKEN: "still-wrong"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}

    result = await hass.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_TOKEN: router.token}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert entry.data == {CONF_URL: router.url, CONF_TOKEN: router.token}
    await loaded(hass, entry)


async def test_reauth_with_other_router_aborts(
    hass: HomeAssistant, router: ServiceProcess, other_router: ServiceProcess
) -> None:
    """If another KITTY now answers at the entry's URL, reauth does not adopt it."""
    entry = kitty_entry(other_router, url=router.url, token="revoked-token")
    entry.add_to_hass(hass)
    result = await entry.start_reauth_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_TOKEN: router.token}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unique_id_mismatch"
    assert entry.data[CONF_TOKEN] == "revoked-token"


@with_mqtt
async def test_reconfigure_loaded_entry(
    hass: HomeAssistant, router: ServiceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Reconfigure suggests the URL but never sends the token back; the entry reloads once."""
    entry = kitty_entry(router, url=f"{router.url}/")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)

    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    schema = result["data_schema"].schema
    assert get_schema_suggested_value(schema, CONF_URL) == f"{router.url}/"
    assert get_schema_suggested_value(schema, CONF_TOKEN) is None

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: router.url, CONF_TOKEN: router.token}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data == {CONF_URL: router.url, CONF_TOKEN: router.token}
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    router_device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, f"{entry.unique_id}_router"), entry.entry_id
    )
    assert router_device is not None
    assert router_device.configuration_url == router.url
    assert DOUBLE_RELOAD not in caplog.text


@with_mqtt
async def test_reconfigure_moved_router_errors_then_recovers(
    hass: HomeAssistant, router: ServiceProcess, closed_url: str
) -> None:
    """An entry waiting for a router that moved: a wrong URL is refused, the new one loads it."""
    entry = kitty_entry(router, url=closed_url)
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: closed_url, CONF_TOKEN: router.token}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}
    assert get_schema_suggested_value(result["data_schema"].schema, CONF_URL) == closed_url

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: router.url, CONF_TOKEN: router.token}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data == {CONF_URL: router.url, CONF_TOKEN: router.token}
    await loaded(hass, entry)


async def test_reconfigure_to_other_router_aborts(
    hass: HomeAssistant, router: ServiceProcess, other_router: ServiceProcess
) -> None:
    """Pointing an entry at another KITTY installation is refused; add it as a new entry."""
    entry = kitty_entry(router)
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: other_router.url, CONF_TOKEN: other_router.token}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unique_id_mismatch"
    assert entry.data == {CONF_URL: router.url, CONF_TOKEN: router.token}
