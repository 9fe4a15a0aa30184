"""`config_change` planning: which files, which diffs, which gates, which steps."""

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from kittyai.contract.orchestrator import RunErrorCode
from kittyai.orchestrator.engine import RunError
from kittyai.orchestrator.home_assistant import HomeAssistantClient
from kittyai.orchestrator.options import ConfigChangePolicy, Policies
from kittyai.orchestrator.templates.base import Peers
from kittyai.orchestrator.templates.config_change import (
    ConfigChangeParams,
    ConfigChangeTemplate,
    EntityCondition,
)
from tests.helpers.net import free_port
from tests.helpers.orchestrator import diff_of, peers_with

AUTOMATIONS = """\
- id: dusk_lights
  alias: Workshop lights at dusk
  triggers:
    - trigger: sun
      event: sunset
  actions:
    - action: light.turn_on
      target:
        entity_id: light.workshop
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    (folder / "packages").mkdir(parents=True)
    (folder / "automations.yaml").write_text(AUTOMATIONS, encoding="utf-8")
    (folder / "configuration.yaml").write_text("automation: !include automations.yaml\n")
    (folder / "secrets.yaml").write_text("wifi: hunter2\n", encoding="utf-8")
    return folder


@pytest.fixture
async def config_peers(config_dir: Path) -> AsyncIterator[Peers]:
    """What `config_change` plans with; planning never calls Home Assistant."""
    async with aiohttp.ClientSession() as session:
        home_assistant = HomeAssistantClient(
            session, f"http://127.0.0.1:{free_port()}", "token-0123456789"
        )
        yield peers_with(session, config_dir, home_assistant=home_assistant)


async def plan(peers: Peers, **params: object) -> list[tuple[str, str, bool]]:
    steps = await ConfigChangeTemplate().plan(ConfigChangeParams.model_validate(params), peers)
    return [(step.name, step.kind, step.approval is not None) for step in steps]


async def test_an_automation_change_is_checked_reloaded_and_verified(
    config_peers: Peers, tmp_path: Path
) -> None:
    diff = diff_of(tmp_path, AUTOMATIONS, AUTOMATIONS.replace("sunset", "sunrise"))
    template = ConfigChangeTemplate()

    steps = await template.plan(
        ConfigChangeParams(
            path="automations.yaml",
            diff=diff,
            verify=EntityCondition(entity_id="automation.workshop_lights_at_dusk", state="on"),
            reason="lights at dawn too",
        ),
        config_peers,
    )

    assert [(step.name, step.kind, step.compensation) for step in steps] == [
        ("analyze", "config.analyze", None),
        ("patch", "config.patch", "config.restore"),
        ("check", "ha.check_config", None),
        ("reload", "ha.reload", None),
        ("verify", "ha.verify", None),
    ]
    assert steps[1].title == "Change automations.yaml (lights at dawn too)"
    assert steps[3].params == {"domain": "automation"}
    assert all(step.approval is None for step in steps)
    assert set(template.executors) >= {step.kind for step in steps} | {"config.restore"}


async def test_the_reload_domain_can_be_named(config_peers: Peers) -> None:
    steps = await ConfigChangeTemplate().plan(
        ConfigChangeParams(path="packages/lights.yaml", content="light: []\n", reload="light"),
        config_peers,
    )

    assert [step.params for step in steps if step.name == "reload"] == [{"domain": "light"}]


async def test_a_file_without_a_reload_restarts_core_after_approval(config_peers: Peers) -> None:
    steps = await plan(config_peers, path="packages/shop.yaml", content="input_boolean: {}\n")

    assert steps == [
        ("analyze", "config.analyze", False),
        ("patch", "config.patch", False),
        ("check", "ha.check_config", False),
        ("restart", "ha.restart", True),
    ]


async def test_a_protected_file_waits_for_a_human_before_the_patch(config_peers: Peers) -> None:
    steps = await ConfigChangeTemplate().plan(
        ConfigChangeParams(path="configuration.yaml", content="automation: []\n"), config_peers
    )

    gates = {step.name: step.approval for step in steps if step.approval is not None}
    assert list(gates) == ["patch", "restart"]
    assert gates["patch"] is not None
    assert gates["patch"].reason == "configuration.yaml is protected: change it?"


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("secrets.yaml", "never patched"),
        (".storage/core.config_entries", "never patched"),
        ("../automations.yaml", "'..'"),
        ("/config/automations.yaml", "absolute"),
        ("custom_components/kitty/__init__.py", "allowed_paths"),
    ],
)
async def test_paths_outside_the_policy_are_refused(
    config_peers: Peers, path: str, why: str
) -> None:
    with pytest.raises(RunError, match=why) as refused:
        await plan(config_peers, path=path, content="x: 1\n")

    assert refused.value.code is RunErrorCode.PATH_NOT_ALLOWED


async def test_the_secrets_stay_closed_even_when_the_options_open_everything(
    config_peers: Peers,
) -> None:
    everything = Policies(config_change=ConfigChangePolicy(allowed_paths=["**"]))

    with pytest.raises(RunError, match="never patched") as refused:
        await plan(replace(config_peers, policies=everything), path="secrets.yaml", content="")

    assert refused.value.code is RunErrorCode.PATH_NOT_ALLOWED


async def test_a_symlink_out_of_the_folder_is_refused(
    config_peers: Peers, config_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere.yaml").write_text("[]\n", encoding="utf-8")
    (config_dir / "scripts.yaml").symlink_to(tmp_path / "elsewhere.yaml")

    with pytest.raises(RunError, match="leads out of the configuration folder") as refused:
        await plan(config_peers, path="scripts.yaml", content="{}\n")

    assert refused.value.code is RunErrorCode.PATH_NOT_ALLOWED


async def test_a_diff_that_does_not_fit_the_file_now_is_refused_with_its_hunk(
    config_peers: Peers, config_dir: Path, tmp_path: Path
) -> None:
    diff = diff_of(tmp_path, AUTOMATIONS, AUTOMATIONS.replace("light.workshop", "light.bench"))
    (config_dir / "automations.yaml").write_text(
        AUTOMATIONS.replace("light.workshop", "light.shop_ceiling"), encoding="utf-8"
    )

    with pytest.raises(RunError) as refused:
        await plan(config_peers, path="automations.yaml", diff=diff)

    assert refused.value.code is RunErrorCode.PATCH_DOES_NOT_APPLY
    assert refused.value.message.startswith("automations.yaml: the diff does not apply")
    assert "-        entity_id: light.workshop" in refused.value.message


async def test_without_home_assistant_the_template_is_unavailable(config_peers: Peers) -> None:
    with pytest.raises(RunError, match="needs Home Assistant") as refused:
        await plan(replace(config_peers, home_assistant=None), path="automations.yaml", content="")

    assert refused.value.code is RunErrorCode.TEMPLATE_UNAVAILABLE


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"path": "automations.yaml"}, "exactly one of diff and content"),
        ({"path": "automations.yaml", "diff": "@@", "content": "[]"}, "exactly one"),
        ({"path": "automations.yaml", "content": "[]", "reload": "Automation!"}, "reload"),
        ({"path": "automations.yaml", "content": "[]", "verify": {"entity_id": "x"}}, "verify"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ConfigChangeParams.model_validate(params)


async def test_a_link_to_a_protected_file_is_protected_too(
    config_peers: Peers, config_dir: Path
) -> None:
    (config_dir / "packages" / "main.yaml").symlink_to(config_dir / "configuration.yaml")

    steps = await plan(config_peers, path="packages/main.yaml", content="automation: []\n")

    assert ("patch", "config.patch", True) in steps
