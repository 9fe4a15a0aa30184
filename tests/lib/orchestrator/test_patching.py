"""Which configuration files `config_change` may touch, and how a unified diff applies to one."""

from pathlib import Path
import stat
import subprocess

import pytest

from kittyai.orchestrator.options import ConfigChangePolicy
from kittyai.orchestrator.templates.patching import (
    PatchDoesNotApplyError,
    PathNotAllowedError,
    apply_unified_diff,
    default_reload_domain,
    file_mode,
    resolve_config_path,
    unified_diff,
    write_atomically,
)

ALLOWED = ConfigChangePolicy().allowed_paths
AUTOMATIONS = """\
- id: lights_on
  alias: Lights on at dusk
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
    (folder / "packages" / "shop").mkdir(parents=True)
    (folder / ".storage").mkdir()
    for name in ("automations.yaml", "secrets.yaml", "packages/shop/printers.yaml"):
        (folder / name).write_text("# placeholder\n", encoding="utf-8")
    return folder


def real_diff(tmp_path: Path, before: str, after: str) -> str:
    """Return what `diff -u` (GNU diffutils) prints for the change: a diff a human would send."""
    (tmp_path / "a").write_text(before, encoding="utf-8")
    (tmp_path / "b").write_text(after, encoding="utf-8")
    result = subprocess.run(
        ["diff", "-u", str(tmp_path / "a"), str(tmp_path / "b")],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "relative", ["automations.yaml", "packages/shop/printers.yaml", "packages/new.yaml"]
)
def test_allowed_paths_resolve_inside_the_folder(config_dir: Path, relative: str) -> None:
    assert resolve_config_path(config_dir, relative, ALLOWED) == config_dir.resolve() / relative


@pytest.mark.parametrize(
    ("relative", "why"),
    [
        ("/etc/passwd", "absolute"),
        ("C:/config/automations.yaml", "absolute"),
        ("../automations.yaml", "'..'"),
        ("packages/../../etc/passwd", "'..'"),
        ("packages\\shop.yaml", "not a path relative"),
        ("", "not a path relative"),
        ("secrets.yaml", "secrets and storage are never patched"),
        ("packages/secrets.yaml", "secrets and storage are never patched"),
        (".storage/core.config_entries", "secrets and storage are never patched"),
        ("custom_components/kitty/__init__.py", "not in policies.config_change.allowed_paths"),
        ("home-assistant_v2.db", "not in policies.config_change.allowed_paths"),
    ],
)
def test_paths_outside_the_policy_are_refused(config_dir: Path, relative: str, why: str) -> None:
    with pytest.raises(PathNotAllowedError, match=why):
        resolve_config_path(config_dir, relative, ALLOWED)


def test_secrets_and_storage_stay_closed_whatever_the_options_allow(config_dir: Path) -> None:
    everything = ["**", "**/*"]

    for relative in ("secrets.yaml", "packages/shop/secrets.yaml", ".storage/auth"):
        with pytest.raises(PathNotAllowedError, match="never patched"):
            resolve_config_path(config_dir, relative, everything)


def test_a_symlink_out_of_the_folder_is_refused(config_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text("stolen: true\n", encoding="utf-8")
    (config_dir / "scripts.yaml").symlink_to(outside)

    with pytest.raises(PathNotAllowedError, match="leads out of the configuration folder"):
        resolve_config_path(config_dir, "scripts.yaml", ALLOWED)


def test_a_symlink_to_the_secrets_is_refused(config_dir: Path) -> None:
    (config_dir / "scenes.yaml").symlink_to(config_dir / "secrets.yaml")

    with pytest.raises(PathNotAllowedError, match=r"a link to secrets\.yaml.*never patched"):
        resolve_config_path(config_dir, "scenes.yaml", ALLOWED)


def test_a_symlink_inside_the_folder_writes_its_allowed_target(config_dir: Path) -> None:
    (config_dir / "scripts.yaml").symlink_to(config_dir / "packages" / "shop" / "printers.yaml")

    target = resolve_config_path(config_dir, "scripts.yaml", ALLOWED)

    assert target == config_dir.resolve() / "packages" / "shop" / "printers.yaml"


def test_a_folder_is_not_a_file(config_dir: Path) -> None:
    (config_dir / "packages" / "folder.yaml").mkdir()

    with pytest.raises(PathNotAllowedError, match="is not a file"):
        resolve_config_path(config_dir, "packages/folder.yaml", ALLOWED)


def test_ui_files_reload_their_domain_others_restart_core() -> None:
    assert default_reload_domain("automations.yaml") == "automation"
    assert default_reload_domain("scripts.yaml") == "script"
    assert default_reload_domain("scenes.yaml") == "scene"
    assert default_reload_domain("configuration.yaml") is None
    assert default_reload_domain("packages/automations.yaml") is None


# --------------------------------------------------------------------------- diffs


def test_a_diff_from_diff_u_applies(tmp_path: Path) -> None:
    after = AUTOMATIONS.replace("event: sunset", "event: sunset\n      offset: '-00:30:00'")

    assert apply_unified_diff(AUTOMATIONS, real_diff(tmp_path, AUTOMATIONS, after)) == after


def test_a_diff_applies_when_the_file_moved_below_its_header(tmp_path: Path) -> None:
    after = AUTOMATIONS.replace("light.workshop", "light.workbench")
    diff = real_diff(tmp_path, AUTOMATIONS, after)
    grown = "# Edited by hand\n# twice\n" + AUTOMATIONS

    assert apply_unified_diff(grown, diff) == "# Edited by hand\n# twice\n" + after


def test_several_hunks_apply_in_order(tmp_path: Path) -> None:
    before = "".join(f"line {n}\n" for n in range(1, 41))
    after = before.replace("line 3\n", "line three\n").replace("line 35\n", "")

    diff = real_diff(tmp_path, before, after)

    assert diff.count("@@ -") == 2
    assert apply_unified_diff(before, diff) == after


def test_a_diff_that_does_not_fit_names_its_hunk(tmp_path: Path) -> None:
    diff = real_diff(tmp_path, AUTOMATIONS, AUTOMATIONS.replace("sunset", "sunrise"))
    edited = AUTOMATIONS.replace("Lights on at dusk", "Dusk lights")
    edited = edited.replace("event: sunset", "event: sunset  # at dusk")

    with pytest.raises(PatchDoesNotApplyError, match="does not apply") as refused:
        apply_unified_diff(edited, diff)

    assert refused.value.hunk is not None
    assert "-      event: sunset" in refused.value.hunk
    assert "+      event: sunrise" in refused.value.hunk


def test_a_text_without_hunks_is_refused() -> None:
    with pytest.raises(PatchDoesNotApplyError, match="no hunks"):
        apply_unified_diff(AUTOMATIONS, "replace sunset by sunrise please")


def test_a_hunk_shorter_than_its_header_is_refused() -> None:
    diff = "@@ -1,3 +1,3 @@\n-- id: lights_on\n+- id: lights_off\n"

    with pytest.raises(PatchDoesNotApplyError, match="other line counts"):
        apply_unified_diff(AUTOMATIONS, diff)


def test_the_missing_newline_at_the_end_is_kept_or_added_as_the_diff_says(tmp_path: Path) -> None:
    before = "a: 1\nb: 2"
    after = "a: 1\nb: 3\n"

    diff = real_diff(tmp_path, before, after)

    assert "\\ No newline at end of file" in diff
    assert apply_unified_diff(before, diff) == after
    assert apply_unified_diff(after, real_diff(tmp_path, after, before)) == before


def test_a_diff_creates_a_file_from_nothing(tmp_path: Path) -> None:
    diff = real_diff(tmp_path, "", "sensor: []\n")

    assert apply_unified_diff("", diff) == "sensor: []\n"


def test_windows_line_endings_stay(tmp_path: Path) -> None:
    before = "a: 1\r\nb: 2\r\n"

    diff = real_diff(tmp_path, "a: 1\nb: 2\n", "a: 1\nb: 2\nc: 3\n")

    assert apply_unified_diff(before, diff) == "a: 1\r\nb: 2\r\nc: 3\r\n"


def test_the_recorded_diff_applies_back_to_the_result() -> None:
    after = AUTOMATIONS.replace("light.workshop", "light.workbench").encode()

    diff = unified_diff(AUTOMATIONS.encode(), after, "automations.yaml")

    assert diff.startswith("--- a/automations.yaml\n+++ b/automations.yaml\n")
    assert apply_unified_diff(AUTOMATIONS, diff).encode() == after


# --------------------------------------------------------------------------- writing


def test_writing_replaces_the_file_and_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "automations.yaml"
    target.write_bytes(b"old\n")
    target.chmod(0o600)

    write_atomically(target, b"new\n", file_mode(target))

    assert target.read_bytes() == b"new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["automations.yaml"]


def test_a_new_file_is_readable_by_home_assistant(tmp_path: Path) -> None:
    target = tmp_path / "packages" / "new.yaml"

    write_atomically(target, b"sensor: []\n", file_mode(target))

    assert target.read_bytes() == b"sensor: []\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
