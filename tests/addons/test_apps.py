"""The KITTY apps pass KITTY's app checker, and the checker catches mistakes."""

from collections.abc import Callable
from pathlib import Path
import shutil
from typing import Any

import pytest
import yaml

from kittyai.catalog import SERVICES
from tests.addons.app_lint import (
    app_folders,
    check_options,
    lint_app,
    lint_repository,
    parse_element,
)

ADDONS = Path(__file__).parents[2] / "addons"
# The four apps and the service each one runs, e.g. kitty_router -> router.
APPS = {f"kitty_{name}": spec for name, spec in SERVICES.items()}

Mutation = Callable[[Path], None]
DROP = object()


def _config(app: str) -> dict[str, Any]:
    return yaml.safe_load((ADDONS / app / "config.yaml").read_text())


def test_repository_holds_one_app_per_service() -> None:
    assert [folder.name for folder in app_folders(ADDONS)] == sorted(APPS)


def test_repository_yaml_passes() -> None:
    assert lint_repository(ADDONS) == []


@pytest.mark.parametrize("app", sorted(APPS))
def test_app_passes(app: str) -> None:
    assert lint_app(ADDONS / app) == []


@pytest.mark.parametrize("app", sorted(APPS))
def test_app_matches_its_service(app: str) -> None:
    spec = APPS[app]
    config = _config(app)
    assert config["name"] == spec.title
    assert config["image"] == f"ghcr.io/kitty-brain/kitty-{spec.name}"
    # The broker always comes from the Supervisor.
    assert config["services"] == ["mqtt:need"]
    # The service listens on its default port; the health check asks there.
    assert list(config["ports"]) == [f"{spec.default_port}/tcp"]
    dockerfile = (ADDONS / app / "Dockerfile").read_text()
    assert f"http://127.0.0.1:{spec.default_port}/health" in dockerfile


def test_only_the_router_announces_itself_and_publishes_its_port() -> None:
    assert {app: _config(app).get("discovery") for app in APPS} == {
        "kitty_router": ["kitty"],
        "kitty_rag": None,
        "kitty_cad": None,
        "kitty_orchestrator": None,
    }
    assert {app: _config(app)["ports"] for app in APPS} == {
        "kitty_router": {"8770/tcp": 8770},
        "kitty_rag": {"8771/tcp": None},
        "kitty_cad": {"8772/tcp": None},
        "kitty_orchestrator": {"8773/tcp": None},
    }


def test_only_the_orchestrator_gets_api_access() -> None:
    keys = ("hassio_api", "hassio_role", "homeassistant_api", "map")
    access = {app: {key: _config(app)[key] for key in keys if key in _config(app)} for app in APPS}
    share = {"map": ["share:rw"]}
    assert access == {
        "kitty_router": {},
        "kitty_rag": share,
        "kitty_cad": share,
        "kitty_orchestrator": {
            "hassio_api": True,
            "hassio_role": "manager",
            "homeassistant_api": True,
            # config_change patches allow-listed files of Home Assistant's configuration.
            "map": ["homeassistant_config:rw", "share:rw"],
        },
    }


# --- the checker catches violations ----------------------------------------


def edit_yaml(relative: str, change: Callable[[Any], None]) -> Mutation:
    def mutate(folder: Path) -> None:
        path = folder / relative
        data = yaml.safe_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return mutate


def config(**changes: Any) -> Mutation:
    """Set (or, with DROP, remove) top-level keys of config.yaml."""

    def change(data: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is DROP:
                del data[key]
            else:
                data[key] = value

    return edit_yaml("config.yaml", change)


def edit_text(relative: str, old: str, new: str) -> Mutation:
    def mutate(folder: Path) -> None:
        path = folder / relative
        text = path.read_text()
        assert old in text, f"{old!r} is not in {relative}"
        path.write_text(text.replace(old, new))

    return mutate


def remove(relative: str) -> Mutation:
    return lambda folder: (folder / relative).unlink()


def chmod(relative: str, mode: int) -> Mutation:
    return lambda folder: (folder / relative).chmod(mode)


def bad(case_id: str, mutate: Mutation, expected: str, app: str = "kitty_router") -> Any:
    return pytest.param(app, mutate, expected, id=case_id)


RUN = "rootfs/etc/services.d/router/run"
FINISH = "rootfs/etc/services.d/router/finish"
TRANSLATIONS = "translations/en.yaml"

# Documented defaults frenck's linter rejects when a config sets them.
DEFAULTS = {
    "boot": "auto",
    "startup": "application",
    "hassio_api": False,
    "hassio_role": "default",
    "homeassistant_api": False,
    "ingress": False,
    "ingress_port": 8099,
    "host_network": False,
    "full_access": False,
    "stage": "stable",
    "timeout": 10,
    "backup": "hot",
    "init": True,
    "options": {},
}

BAD_APPS = [
    *(
        bad(f"default-{key}", config(**{key: value}), f"{key}: {value!r} is the default")
        for key, value in DEFAULTS.items()
    ),
    bad("watchdog", config(watchdog="http://[HOST]:[PORT:8770]/health"), "watchdog is obsolete"),
    bad("advanced", config(advanced=True), "advanced is ignored"),
    bad("armv7", config(arch=["aarch64", "amd64", "armv7"]), "arch"),
    bad("arch-twice", config(arch=["amd64", "amd64"]), "arch"),
    bad("unknown-key", config(colour="red"), "unknown key 'colour'"),
    bad("missing-description", config(description=DROP), "missing required key 'description'"),
    bad("no-init", config(init=DROP), "init must be false"),
    bad("version-not-text", config(version=1.0), "version: invalid value"),
    bad("slug-not-folder", config(slug="kitty_other"), "differs from its folder"),
    bad("slug-characters", config(slug="kitty router"), "characters outside"),
    bad("image-tag", config(image="ghcr.io/kitty-brain/kitty-router:0.1.0"), "no tag"),
    bad("service-kind", config(services=["mqtt:maybe"]), "services entry 'mqtt:maybe'"),
    bad("service-name", config(services=["redis:need"]), "services entry 'redis:need'"),
    bad("port-protocol", config(ports={"8770": 8770}), "ports '8770'"),
    bad("port-range", config(ports={"8770/tcp": 70000}), "ports '8770/tcp'"),
    bad("port-description", config(ports_description={"9/udp": "x"}), "'9/udp' is not in ports"),
    bad("webui-ingress", config(webui="http://[HOST]:[PORT:8770]/", ingress=True), "webui"),
    bad("ingress-port-0", config(ingress=True, ingress_port=0), "needs host_network"),
    bad("backup-pre-cold", config(backup="cold", backup_pre="true"), "cold backup"),
    bad("map-legacy-config", config(map=["config:rw"]), "map entry 'config:rw'"),
    bad("map-mode", config(map=["share:rx"]), "map entry 'share:rx'"),
    bad("map-long-form", config(map=[{"type": "share", "mode": "rw"}]), "map entry"),
    bad(
        "option-without-schema",
        edit_yaml("config.yaml", lambda c: c["options"].update(extra=1)),
        "option 'extra' has no schema entry",
    ),
    bad(
        "optional-with-default",
        edit_yaml("config.yaml", lambda c: c["options"].update(api_token="secret")),
        "option 'api_token' is optional (?) but has a default",
    ),
    bad(
        "default-outside-list",
        edit_yaml("config.yaml", lambda c: c["options"].update(log_level="loud")),
        "option 'log_level': 'loud' does not fit",
    ),
    *(
        bad(
            f"schema-{case_id}",
            edit_yaml("config.yaml", lambda c, spec=spec: c["schema"].update(log_level=spec)),
            expected,
        )
        for case_id, spec, expected in (
            ("unknown-type", "lst(info|debug)", "unknown type 'lst'"),
            ("empty-choice", "list(info||debug)", "choices must be non-empty"),
            ("min-above-max", "int(5,1)", "min is above max"),
            ("bad-bounds", "str(a,b)", "bounds must be"),
            ("bad-regex", "match([)", "bad regular expression"),
            ("port-arguments", "port(1,2)", "takes no arguments"),
            ("device-filter", "device(tty)", "subsystem=<name>"),
            ("list-in-list", [["str"]], "is not an element"),
            ("too-deep", [{"hosts": ["str"]}], "nested deeper than 2 levels"),
            ("not-an-element", 5, "is not an element"),
        )
    ),
    bad(
        "translation-option",
        edit_yaml(TRANSLATIONS, lambda t: t["configuration"].pop("api_token")),
        "option 'api_token' needs a name and a description",
    ),
    bad(
        "translation-port",
        edit_yaml(TRANSLATIONS, lambda t: t.pop("network")),
        "port '8770/tcp' needs a description",
    ),
    bad(
        "translation-stale",
        edit_yaml(TRANSLATIONS, lambda t: t["configuration"].update(gone={"name": "x"})),
        "'gone' is not an option",
    ),
    bad("no-translations", remove(TRANSLATIONS), "translations/en.yaml: missing"),
    bad("no-docs", remove("DOCS.md"), "DOCS.md: missing"),
    bad("changelog-version", edit_text("CHANGELOG.md", "## [0.1.0]", "## [0.0.9]"), "CHANGELOG"),
    bad("no-healthcheck", edit_text("Dockerfile", "HEALTHCHECK ", "# HEALTHCHECK "), "HEALTHCHECK"),
    bad("from-latest", edit_text("Dockerfile", ":3.14-alpine3.24", ":latest"), "not an explicit"),
    bad("from-untagged", edit_text("Dockerfile", ":3.14-alpine3.24", ""), "not an explicit"),
    bad(
        "from-variable",
        edit_text("Dockerfile", "ghcr.io/home-assistant/base-python:3.14-alpine3.24", "$BASE"),
        "not an explicit",
    ),
    bad("pip-version", edit_text("Dockerfile", "==0.1.0", "==0.0.9"), "installs kittyai 0.0.9"),
    bad("pip-extra", edit_text("Dockerfile", "kittyai[router]", "kittyai[rag]"), "'router' extra"),
    bad("pip-unpinned", edit_text("Dockerfile", "==0.1.0", ""), "no pip install of"),
    bad("no-rootfs", edit_text("Dockerfile", "COPY rootfs /", "COPY rootfs /srv"), "COPY rootfs"),
    bad("label", edit_text("Dockerfile", 'io.hass.arch="${BUILD_ARCH}" \\\n', ""), "io.hass.arch"),
    bad("label-type", edit_text("Dockerfile", 'type="app"', 'type="addon"'), "io.hass.type"),
    bad(
        "cad-on-alpine",
        edit_text(
            "Dockerfile",
            "ghcr.io/home-assistant/base-debian:trixie",
            "ghcr.io/home-assistant/base-python:3.14-alpine3.24",
        ),
        "needs a glibc",
        app="kitty_cad",
    ),
    bad("run-not-executable", chmod(RUN, 0o644), "run: not executable"),
    bad("run-missing", remove(RUN), "run: missing"),
    bad("run-module", edit_text(RUN, "kittyai.router", "kittyai.rag"), "kittyai.router"),
    bad("run-no-exec", edit_text(RUN, "exec python3", "python3"), "does not exec"),
    bad("run-shebang", edit_text(RUN, "/usr/bin/with-contenv bashio", "/bin/sh"), "with-contenv"),
    bad("finish-halt", edit_text(FINISH, "exec /run/s6/basedir/bin/halt", ""), "bin/halt"),
]


@pytest.mark.parametrize(("app", "mutate", "expected"), BAD_APPS)
def test_checker_catches(app: str, mutate: Mutation, expected: str, tmp_path: Path) -> None:
    folder = shutil.copytree(ADDONS / app, tmp_path / app)
    mutate(folder)
    problems = lint_app(folder)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(lambda r: r.pop("name"), "name is required", id="no-name"),
        pytest.param(lambda r: r.update(icon="x"), "unknown key 'icon'", id="unknown-key"),
        pytest.param(lambda r: r.update(url="http://x"), "https", id="url"),
    ],
)
def test_checker_catches_repository(
    change: Callable[[dict[str, Any]], None], expected: str, tmp_path: Path
) -> None:
    root = shutil.copytree(ADDONS, tmp_path / "addons")
    edit_yaml("repository.yaml", change)(root)
    assert any(expected in problem for problem in lint_repository(root))


@pytest.mark.parametrize(
    "element",
    [
        "bool",
        "email",
        "url",
        "port",
        "password",
        "password(12,)",
        "str(,64)",
        "int(1,16)",
        "float(0.5,2)",
        "match(^[a-z]+(-[a-z]+)*$)",
        "list(a|b|c)",
        "device",
        "device(subsystem=tty)",
        "int?",
        "list(a|b)?",
        "match(^x$)?",
    ],
)
def test_checker_accepts_documented_elements(element: str) -> None:
    parse_element(element)


def test_checker_accepts_nested_options() -> None:
    schema = {"hosts": [{"name": "str", "port": "port"}], "tags": ["str?"], "tls": {"ca": "str?"}}
    assert check_options({"hosts": [], "tags": []}, schema) == []
