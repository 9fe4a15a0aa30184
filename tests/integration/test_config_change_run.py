"""`config_change` runs of the real orchestrator against a real Home Assistant.

Home Assistant serves its REST API on 127.0.0.1 from a configuration folder the
test owns; the orchestrator process patches files in that folder, has Home
Assistant check and reload them, and rolls a bad change back.
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from homeassistant import config as conf_util
from homeassistant.components.automation import EVENT_AUTOMATION_RELOADED
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import Event, HomeAssistant
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from kittyai.catalog import ServiceName
from tests.helpers.orchestrator import (
    artifact_text,
    create_run,
    diff_of,
    step_states,
    wait_until_settled,
)
from tests.helpers.services import ServiceApi, ServiceProcess

ORCHESTRATOR_TOKEN = "orchestrator-token-0123456789"
CONFIGURATION = """\
homeassistant:
  packages: !include_dir_named packages
automation: !include automations.yaml
"""
AUTOMATIONS = """\
# Made in the UI.
- id: "1700000000001"
  alias: Workshop lights at dusk
  triggers:
    - trigger: event
      event_type: kitty_dusk
  actions:
    - action: persistent_notification.create
      data:
        message: Dusk
"""
FAN_OFF = """\
- id: "1700000000002"
  alias: Workbench fan off
  triggers:
    - trigger: event
      event_type: kitty_fan_off
  actions:
    - action: persistent_notification.create
      data:
        message: Fan off
"""
DUSK = "automation.workshop_lights_at_dusk"
FAN = "automation.workbench_fan_off"


@pytest.fixture
def hass_config_dir(hass_tmp_config_dir: str) -> str:
    """Give Home Assistant a configuration folder as the UI leaves it: automations.yaml."""
    folder = Path(hass_tmp_config_dir)
    (folder / "configuration.yaml").write_text(CONFIGURATION, encoding="utf-8")
    (folder / "automations.yaml").write_text(AUTOMATIONS, encoding="utf-8")
    (folder / "secrets.yaml").write_text("shop_wifi: hunter2\n", encoding="utf-8")
    (folder / "packages").mkdir()
    return hass_tmp_config_dir


@pytest.fixture
async def core_url(hass: HomeAssistant, hass_client: ClientSessionGenerator) -> str:
    """Run Home Assistant with its REST API and the automations from the folder."""
    config = await conf_util.async_hass_config_yaml(hass)
    for domain in ("http", "api", "config", "automation"):
        assert await async_setup_component(hass, domain, config)
    await hass.async_block_till_done()
    assert hass.states.get(DUSK) is not None
    client = await hass_client()
    return str(client.make_url("")).rstrip("/")


@pytest.fixture
def config_folder(hass: HomeAssistant) -> Path:
    """Return Home Assistant's configuration folder."""
    return Path(hass.config.config_dir)


@pytest.fixture
def reloads(hass: HomeAssistant) -> list[Event]:
    """Record every reload of the automations."""
    events: list[Event] = []
    hass.bus.async_listen(EVENT_AUTOMATION_RELOADED, events.append)
    return events


@pytest.fixture
async def orchestrator(
    hass: HomeAssistant, core_url: str, hass_access_token: str, tmp_path: Path
) -> AsyncIterator[ServiceApi]:
    """Run the real orchestrator process, pointed at this Home Assistant and its folder."""
    process = ServiceProcess(
        ServiceName.ORCHESTRATOR,
        tmp_path / "orchestrator",
        mqtt_port=None,
        token=ORCHESTRATOR_TOKEN,
        extra_options={
            "home_assistant": {
                "url": core_url,
                "token": hass_access_token,
                "config_dir": hass.config.config_dir,
            },
            # A change that does not verify is given little time.
            "config_change": {"verify_timeout_s": 2},
        },
    )
    # Off the loop: Home Assistant must keep serving while the process starts.
    await asyncio.to_thread(process.start, 60)
    async with aiohttp.ClientSession() as session:
        yield ServiceApi(process, session)
    await asyncio.to_thread(process.stop)
    assert hass_access_token not in process.log()


def config_file(hass: HomeAssistant, name: str) -> Path:
    return Path(hass.config.path(name))


async def test_a_patch_that_breaks_the_config_check_is_undone_without_a_reload(
    hass: HomeAssistant, orchestrator: ServiceApi, reloads: list[Event], tmp_path: Path
) -> None:
    automations = config_file(hass, "automations.yaml")
    before = automations.read_bytes()
    # An unclosed flow sequence: the YAML no longer loads.
    broken = AUTOMATIONS.replace("alias: Workshop lights at dusk", "alias: [Workshop lights")

    created = await create_run(
        orchestrator,
        "config_change",
        path="automations.yaml",
        diff=diff_of(tmp_path, AUTOMATIONS, broken),
    )
    run = await wait_until_settled(orchestrator, created["id"])

    assert run["state"] == "rolled_back"
    assert step_states(run) == {
        "analyze": "succeeded",
        "patch": "compensated",
        "check": "failed",
        "reload": "skipped",
    }
    check = run["steps"][2]["message"]
    assert check.startswith("Home Assistant's config check failed")
    assert "automations.yaml" in check
    assert automations.read_bytes() == before
    assert reloads == []
    assert hass.states.get(DUSK) is not None
    assert "patch: undone by config.restore" in await artifact_text(
        orchestrator, run, "rollback_log"
    )


async def test_a_patch_that_does_not_verify_is_undone_and_reloaded_back(
    hass: HomeAssistant, orchestrator: ServiceApi, reloads: list[Event], tmp_path: Path
) -> None:
    automations = config_file(hass, "automations.yaml")
    before = automations.read_bytes()
    mode = automations.stat().st_mode

    created = await create_run(
        orchestrator,
        "config_change",
        path="automations.yaml",
        diff=diff_of(tmp_path, AUTOMATIONS, AUTOMATIONS + FAN_OFF),
        # Expects an automation the patch does not make.
        verify={"entity_id": "automation.workbench_fan_auto_off", "state": "on"},
        reason="turn the workbench fan off",
    )
    run = await wait_until_settled(orchestrator, created["id"])

    assert run["state"] == "rolled_back"
    assert step_states(run) == {
        "analyze": "succeeded",
        "patch": "compensated",
        "check": "succeeded",
        "reload": "succeeded",
        "verify": "failed",
    }
    assert "automation.workbench_fan_auto_off does not exist" in run["steps"][4]["message"]
    assert automations.read_bytes() == before
    assert automations.stat().st_mode == mode
    # Reloaded with the change, then with the file as it was: the new automation is gone,
    # only its registry entry is left (HA shows it unavailable).
    assert len(reloads) == 2
    fan = hass.states.get(FAN)
    assert fan is not None
    assert (fan.state, fan.attributes.get("restored")) == (STATE_UNAVAILABLE, True)
    assert hass.states.get(DUSK) is not None


async def test_a_good_patch_gives_home_assistant_the_new_automation(
    hass: HomeAssistant, orchestrator: ServiceApi, reloads: list[Event], tmp_path: Path
) -> None:
    created = await create_run(
        orchestrator,
        "config_change",
        path="automations.yaml",
        diff=diff_of(tmp_path, AUTOMATIONS, AUTOMATIONS + FAN_OFF),
        verify={"template": f"{{{{ is_state('{FAN}', 'on') }}}}"},
    )
    run = await wait_until_settled(orchestrator, created["id"])

    assert run["state"] == "succeeded", run
    assert config_file(hass, "automations.yaml").read_text(encoding="utf-8") == (
        AUTOMATIONS + FAN_OFF
    )
    fan = hass.states.get(FAN)
    assert fan is not None
    assert fan.state == "on"
    assert len(reloads) == 1
    assert run["steps"][0]["result"]["sha256"] != run["steps"][1]["result"]["sha256"]


async def test_a_new_file_that_needs_a_restart_waits_and_is_removed_on_rejection(
    hass: HomeAssistant, orchestrator: ServiceApi
) -> None:
    package = config_file(hass, "packages/workbench.yaml")

    created = await create_run(
        orchestrator,
        "config_change",
        path="packages/workbench.yaml",
        content="input_boolean:\n  workbench: {}\n",
    )
    waiting = await wait_until_settled(orchestrator, created["id"])

    assert waiting["state"] == "awaiting_approval"
    assert step_states(waiting)["restart"] == "awaiting_approval"
    assert package.read_text(encoding="utf-8") == "input_boolean:\n  workbench: {}\n"

    answer = await orchestrator.call(
        "POST",
        f"/api/runs/{created['id']}/approvals",
        json_body={"decision": "reject", "approver": "ada", "reason": "not during a print"},
    )
    assert answer.status == 200, answer.body
    run = await wait_until_settled(orchestrator, created["id"])

    assert run["state"] == "rolled_back"
    assert not package.exists()


async def test_a_protected_file_is_not_touched_before_approval_nor_after_a_human_edit(
    hass: HomeAssistant, orchestrator: ServiceApi
) -> None:
    configuration = config_file(hass, "configuration.yaml")

    created = await create_run(
        orchestrator,
        "config_change",
        path="configuration.yaml",
        content=CONFIGURATION + "logger:\n",
    )
    waiting = await wait_until_settled(orchestrator, created["id"])

    assert waiting["state"] == "awaiting_approval"
    assert waiting["awaiting_step"] == 1
    assert configuration.read_text(encoding="utf-8") == CONFIGURATION

    # Someone edits the file while the run waits; the approval then comes too late.
    edited = CONFIGURATION + "recorder:\n"
    await asyncio.to_thread(configuration.write_text, edited, encoding="utf-8")
    answer = await orchestrator.call(
        "POST",
        f"/api/runs/{created['id']}/approvals",
        json_body={"decision": "approve", "approver": "ada"},
    )
    assert answer.status == 200, answer.body
    run = await wait_until_settled(orchestrator, created["id"])

    assert run["state"] == "failed"
    assert "configuration.yaml changed since it was recorded" in run["steps"][1]["message"]
    assert configuration.read_text(encoding="utf-8") == edited


@pytest.mark.parametrize(
    ("params", "refusal"),
    [
        pytest.param(
            {"path": "secrets.yaml", "content": "shop_wifi: stolen\n"},
            ("path_not_allowed", "never patched"),
            id="secrets",
        ),
        pytest.param(
            {"path": "../configuration.yaml", "content": ""},
            ("path_not_allowed", "contains '..'"),
            id="traversal",
        ),
        pytest.param(
            {"path": "home-assistant_v2.db", "content": ""},
            ("path_not_allowed", "allowed_paths"),
            id="not-allowed",
        ),
        pytest.param(
            {
                "path": "automations.yaml",
                "diff": "@@ -1,1 +1,1 @@\n-- id: nothing_like_this\n+- id: other\n",
            },
            ("patch_does_not_apply", "-- id: nothing_like_this"),
            id="stale-diff",
        ),
    ],
)
async def test_changes_outside_the_rules_are_refused_and_nothing_changes(
    config_folder: Path,
    orchestrator: ServiceApi,
    reloads: list[Event],
    params: dict[str, str],
    refusal: tuple[str, str],
) -> None:
    code, message = refusal
    before = {
        name: (config_folder / name).read_bytes() for name in ("secrets.yaml", "automations.yaml")
    }

    answer = await orchestrator.call(
        "POST", "/api/runs", json_body={"template": "config_change", "params": params}
    )

    assert answer.status == 422
    assert answer.code == code
    assert message in answer.body["error"]["message"]
    assert {name: (config_folder / name).read_bytes() for name in before} == before
    assert (await orchestrator.get("/api/runs"))["total"] == 0
    assert reloads == []
