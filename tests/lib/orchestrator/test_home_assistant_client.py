"""The orchestrator's Home Assistant client against Home Assistant's own HTTP API."""

import asyncio
from pathlib import Path

import aiohttp
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pydantic import SecretStr
import pytest
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from kittyai.orchestrator.home_assistant import (
    ConfigCheck,
    HomeAssistantClient,
    HomeAssistantError,
)
from kittyai.orchestrator.options import HomeAssistantOptions
from tests.helpers.net import free_port

CONFIGURATION = "input_boolean:\n  workbench_fan:\n    name: Workbench fan\n"


@pytest.fixture
def hass_config_dir(hass_tmp_config_dir: str) -> str:
    """Give Home Assistant a configuration folder with a configuration.yaml."""
    (Path(hass_tmp_config_dir) / "configuration.yaml").write_text(CONFIGURATION, encoding="utf-8")
    return hass_tmp_config_dir


@pytest.fixture
async def core_url(hass: HomeAssistant, hass_client: ClientSessionGenerator) -> str:
    """Serve Home Assistant's REST API (api, config, input_boolean) on 127.0.0.1."""
    for domain in ("http", "api", "config"):
        assert await async_setup_component(hass, domain, {})
    assert await async_setup_component(
        hass, "input_boolean", {"input_boolean": {"workbench_fan": {"name": "Workbench fan"}}}
    )
    client = await hass_client()
    return str(client.make_url("")).rstrip("/")


@pytest.fixture
def core(
    session: aiohttp.ClientSession, core_url: str, hass_access_token: str
) -> HomeAssistantClient:
    return HomeAssistantClient(session, core_url, hass_access_token)


async def test_the_config_check_passes_for_a_valid_configuration(
    core: HomeAssistantClient,
) -> None:
    assert await core.check_config() == ConfigCheck(valid=True)


async def test_the_config_check_reports_what_is_broken(
    core: HomeAssistantClient, hass: HomeAssistant
) -> None:
    broken = "input_boolean:\n  workbench_fan: [unclosed\n"
    configuration = Path(hass.config.path("configuration.yaml"))
    await asyncio.to_thread(configuration.write_text, broken, encoding="utf-8")

    check = await core.check_config()

    assert not check.valid
    assert check.errors is not None
    assert "configuration.yaml" in check.errors


async def test_a_service_call_changes_the_state_core_reports(core: HomeAssistantClient) -> None:
    await core.call_service(
        "input_boolean", "turn_on", {"entity_id": "input_boolean.workbench_fan"}
    )

    state = await core.get_state("input_boolean.workbench_fan")

    assert state is not None
    assert state.state == "on"
    assert state.attributes["friendly_name"] == "Workbench fan"


async def test_an_unknown_entity_has_no_state(core: HomeAssistantClient) -> None:
    assert await core.get_state("light.nowhere") is None


async def test_an_unknown_service_is_refused(core: HomeAssistantClient) -> None:
    with pytest.raises(
        HomeAssistantError, match=r"POST /api/services/nowhere/reload failed with HTTP 400"
    ):
        await core.call_service("nowhere", "reload")


async def test_templates_render_with_the_states(core: HomeAssistantClient) -> None:
    template = "{{ is_state('input_boolean.workbench_fan', 'off') }}"

    assert await core.render_template(template) == "True"


async def test_a_broken_template_is_refused_with_cores_message(core: HomeAssistantClient) -> None:
    with pytest.raises(HomeAssistantError, match="Error rendering template"):
        await core.render_template("{{ states('sensor.x') | no_such_filter }}")


async def test_core_reports_that_it_runs(core: HomeAssistantClient) -> None:
    assert await core.get_core_state() == "RUNNING"


async def test_a_refused_token_is_explained_without_the_token(
    session: aiohttp.ClientSession, core_url: str
) -> None:
    token = "not-a-token-0123456789"
    core = HomeAssistantClient(session, core_url, token)

    with pytest.raises(HomeAssistantError, match="refused the token") as refused:
        await core.check_config()

    assert token not in str(refused.value)


async def test_an_unreachable_core_is_explained(session: aiohttp.ClientSession) -> None:
    core = HomeAssistantClient(session, f"http://127.0.0.1:{free_port()}", "secret-token-42")

    with pytest.raises(HomeAssistantError, match="Cannot reach Home Assistant") as refused:
        await core.get_state("light.workshop")

    assert "secret-token-42" not in str(refused.value)


async def test_the_configured_core_comes_first_then_the_supervisors_proxy(
    session: aiohttp.ClientSession,
) -> None:
    configured = HomeAssistantOptions(url="http://192.168.1.5:8123", token=SecretStr("t" * 20))
    under_supervisor = {"SUPERVISOR_TOKEN": "s" * 20}

    direct = HomeAssistantClient.from_options(session, configured, under_supervisor)
    proxied = HomeAssistantClient.from_options(session, HomeAssistantOptions(), under_supervisor)

    assert direct is not None
    assert str(direct.url) == "http://192.168.1.5:8123"
    assert proxied is not None
    assert str(proxied.url) == "http://supervisor/core"
    assert HomeAssistantClient.from_options(session, HomeAssistantOptions(), {}) is None


async def test_the_supervisors_proxy_follows_supervisor_url(session: aiohttp.ClientSession) -> None:
    environ = {"SUPERVISOR_TOKEN": "s" * 20, "SUPERVISOR_URL": "http://127.0.0.1:9999"}

    proxied = HomeAssistantClient.from_options(session, HomeAssistantOptions(), environ)

    assert proxied is not None
    assert str(proxied.url) == "http://127.0.0.1:9999/core"
