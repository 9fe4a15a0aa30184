"""hassfest's rules for custom integrations, checked here because hassfest cannot run here.

hassfest lives only in the HA core repository (script/hassfest). These tests re-state
the rules it applies with `--integration-path` (manifest, dependencies, translations,
icons, services, config schema), read from core's dev branch, and add what hassfest
does not do for custom integrations but HA needs at run time: every translation key
the code uses exists in translations/en.json. Each failure names the offending key.
"""

import ast
from collections.abc import Iterator
import json
from pathlib import Path
import re
import string
import struct
from typing import Any

from awesomeversion import AwesomeVersion, AwesomeVersionStrategy
import homeassistant.components
from homeassistant.const import Platform
from homeassistant.requirements import DISCOVERY_INTEGRATIONS
from packaging.requirements import InvalidRequirement, Requirement
import pytest
import yaml

import custom_components.kitty

PACKAGE = Path(custom_components.kitty.__file__).parent
CORE_COMPONENTS = Path(homeassistant.components.__file__).parent
MANIFEST: dict[str, Any] = json.loads((PACKAGE / "manifest.json").read_text(encoding="utf-8"))
EN: dict[str, Any] = json.loads((PACKAGE / "translations" / "en.json").read_text(encoding="utf-8"))
ICONS: dict[str, Any] = json.loads((PACKAGE / "icons.json").read_text(encoding="utf-8"))

# hassfest manifest.py: CUSTOM_INTEGRATION_MANIFEST_SCHEMA has no ALLOW_EXTRA.
ALLOWED_MANIFEST_KEYS = {
    "domain",
    "name",
    "after_dependencies",
    "bluetooth",
    "codeowners",
    "config_flow",
    "dependencies",
    "dhcp",
    "disabled",
    "documentation",
    "homekit",
    "import_executor",
    "integration_type",
    "iot_class",
    "issue_tracker",
    "loggers",
    "mqtt",
    "quality_scale",
    "requirements",
    "single_config_entry",
    "ssdp",
    "usb",
    "version",
    "zeroconf",
}
REQUIRED_MANIFEST_KEYS = {"domain", "name", "version", "codeowners", "documentation", "iot_class"}
# HACS requires the issue tracker as well.
REQUIRED_MANIFEST_KEYS |= {"issue_tracker"}
IOT_CLASSES = {
    "assumed_state",
    "calculated",
    "cloud_polling",
    "cloud_push",
    "local_polling",
    "local_push",
}
INTEGRATION_TYPES = {
    "device",
    "entity",
    "hardware",
    "helper",
    "hub",
    "service",
    "system",
    "virtual",
}

# hassfest dependencies.py: integrations any integration may import without listing them.
ALLOWED_USED_COMPONENTS = {
    *(platform.value for platform in Platform),
    "alert",
    "automation",
    "conversation",
    "default_config",
    "device_automation",
    "frontend",
    "group",
    "homeassistant",
    "input_boolean",
    "input_button",
    "input_datetime",
    "input_number",
    "input_select",
    "input_text",
    "media_source",
    "onboarding",
    "panel_custom",
    "persistent_notification",
    "person",
    "script",
    "shopping_list",
    "sun",
    "system_health",
    "system_log",
    "timer",
    "webhook",
    "websocket_api",
    "zone",
    "mjpeg",
    "stream",
}

# hassfest translations.py
RE_TRANSLATION_KEY = re.compile(r"^(?!.+[_-]{2})(?![_-])[a-z0-9-_]+(?<![_-])$")
RE_HTML = re.compile(r"<[a-z].*?>", re.IGNORECASE)
RE_PLACEHOLDER_IN_SINGLE_QUOTES = re.compile(r"'{\w+}'")
RE_REFERENCE = re.compile(r"\[%key:")
RE_URL = re.compile(
    r"(((ftp|ftps|scp|http|https|mqtt|mqtts|socket|socks5):\/\/|www\.)"
    r"[a-z0-9]+([\-\.]{1}[a-z0-9]+)*\.[a-z]{2,5}(:[0-9]{1,5})?(\/.*)?)",
    re.IGNORECASE,
)
TRANSLATION_SECTIONS = {
    "title",
    "config",
    "config_subentries",
    "options",
    "preview_features",
    "selector",
    "device_automation",
    "system_health",
    "config_panel",
    "application_credentials",
    "issues",
    "entity_component",
    "device",
    "entity",
    "exceptions",
    "services",
    "conditions",
    "triggers",
    "conversation",
    "common",
}
SERVICE_REGISTRATIONS = {
    "async_register",
    "async_register_admin_service",
    "async_register_entity_service",
    "async_register_platform_entity_service",
}

# Every rule of the Integration Quality Scale (core script/hassfest/quality_scale.py).
QUALITY_SCALE_RULES = {
    "action-setup",
    "appropriate-polling",
    "brands",
    "common-modules",
    "config-flow",
    "config-flow-test-coverage",
    "dependency-transparency",
    "docs-actions",
    "docs-conditions",
    "docs-high-level-description",
    "docs-installation-instructions",
    "docs-removal-instructions",
    "docs-triggers",
    "entity-event-setup",
    "entity-unique-id",
    "has-entity-name",
    "runtime-data",
    "test-before-configure",
    "test-before-setup",
    "unique-config-entry",
    "action-exceptions",
    "config-entry-unloading",
    "docs-configuration-parameters",
    "docs-installation-parameters",
    "entity-unavailable",
    "integration-owner",
    "log-when-unavailable",
    "parallel-updates",
    "reauthentication-flow",
    "test-coverage",
    "devices",
    "diagnostics",
    "discovery",
    "discovery-update-info",
    "docs-data-update",
    "docs-examples",
    "docs-known-limitations",
    "docs-supported-devices",
    "docs-supported-functions",
    "docs-troubleshooting",
    "docs-use-cases",
    "dynamic-devices",
    "entity-category",
    "entity-device-class",
    "entity-disabled-by-default",
    "entity-translations",
    "exception-translations",
    "icon-translations",
    "reconfiguration-flow",
    "repair-issues",
    "stale-devices",
    "async-dependency",
    "inject-websession",
    "strict-typing",
}


def modules() -> Iterator[tuple[Path, ast.Module]]:
    """Yield every Python module of the integration, parsed."""
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def calls(tree: ast.AST) -> Iterator[ast.Call]:
    """Yield every call in a tree."""
    yield from (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def call_name(call: ast.Call) -> str:
    """Return the called function's or method's own name."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    """Return a keyword argument's expression, if given."""
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def literal(node: ast.expr | None) -> str | None:
    """Return a string literal's value."""
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def lookup(tree: dict[str, Any], *path: str) -> Any:
    """Return the value at `path` in a translation tree, or None."""
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def strings(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """Yield (path, key, value) for every key of a nested JSON tree."""
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        yield path, key, value
        if isinstance(value, dict):
            yield from strings(value, path)


def placeholders(text: str) -> set[str]:
    """Return the placeholder names of a translation string."""
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


# -- manifest -----------------------------------------------------------------------------


def test_manifest_keys_are_sorted() -> None:
    """hassfest: `domain`, `name`, then the other keys alphabetically."""
    keys = list(MANIFEST)
    expected = ["domain", "name", *sorted(set(keys) - {"domain", "name"})]
    assert keys == expected, f"manifest keys are not sorted: {keys} should be {expected}"


def test_manifest_required_and_allowed_keys() -> None:
    """Required keys are there; a key hassfest does not know fails its schema."""
    missing = REQUIRED_MANIFEST_KEYS - MANIFEST.keys()
    assert not missing, f"manifest lacks {sorted(missing)}"
    unknown = MANIFEST.keys() - ALLOWED_MANIFEST_KEYS
    assert not unknown, f"manifest has keys hassfest rejects: {sorted(unknown)}"


def test_manifest_values() -> None:
    """Domain, version, documentation, iot_class, integration_type and owners are valid."""
    assert MANIFEST["domain"] == PACKAGE.name, "manifest domain must equal the directory name"
    assert not (CORE_COMPONENTS / MANIFEST["domain"]).exists(), "domain collides with core"
    version = AwesomeVersion(
        MANIFEST["version"],
        ensure_strategy=[
            AwesomeVersionStrategy.CALVER,
            AwesomeVersionStrategy.SEMVER,
            AwesomeVersionStrategy.SIMPLEVER,
            AwesomeVersionStrategy.BUILDVER,
            AwesomeVersionStrategy.PEP440,
        ],
    )
    assert version.valid, f"manifest version {MANIFEST['version']!r} is not a valid version"
    for key in ("documentation", "issue_tracker"):
        assert MANIFEST[key].startswith("https://"), f"manifest {key} must be an https URL"
    assert not MANIFEST["documentation"].startswith("https://www.home-assistant.io/integrations"), (
        "a custom integration's documentation must not point at home-assistant.io/integrations"
    )
    assert MANIFEST["iot_class"] in IOT_CLASSES, f"unknown iot_class {MANIFEST['iot_class']!r}"
    assert MANIFEST.get("integration_type", "hub") in INTEGRATION_TYPES, "unknown integration_type"
    assert MANIFEST["codeowners"], "manifest codeowners is empty (integration-owner rule)"
    assert all(owner.startswith("@") for owner in MANIFEST["codeowners"]), "codeowners need @"
    if MANIFEST.get("config_flow"):
        assert (PACKAGE / "config_flow.py").is_file(), "config_flow is true without config_flow.py"


@pytest.mark.parametrize("requirement", MANIFEST.get("requirements", []))
def test_requirements_are_ranges(requirement: str) -> None:
    """PEP 508 without spaces, and a range: an exact pin would fight HA's constraints."""
    assert " " not in requirement, f"requirement {requirement!r} contains spaces"
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement as err:
        pytest.fail(f"requirement {requirement!r} is not PEP 508: {err}")
    operators = {spec.operator for spec in parsed.specifier}
    assert operators, f"requirement {requirement!r} has no version range"
    assert not operators & {"==", "==="}, f"requirement {requirement!r} pins an exact version"


def test_dependencies_exist_once() -> None:
    """Every dependency is a core integration, listed in one of the two lists only."""
    dependencies = set(MANIFEST.get("dependencies", []))
    after = set(MANIFEST.get("after_dependencies", []))
    assert not dependencies & after, f"in both lists: {sorted(dependencies & after)}"
    unknown = {dep for dep in dependencies | after if not (CORE_COMPONENTS / dep).is_dir()}
    assert not unknown, f"dependencies that are no HA integration: {sorted(unknown)}"


class _ComponentImports(ast.NodeVisitor):
    """hassfest's ImportCollector: integrations a module imports, outside TYPE_CHECKING."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module is None:
            return
        if node.module.startswith("homeassistant.components."):
            self.found.add(node.module.split(".")[2])
        elif node.module == "homeassistant.components":
            self.found.update(alias.name for alias in node.names)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.startswith("homeassistant.components."):
                self.found.add(alias.name.split(".")[2])


def test_imported_integrations_are_dependencies() -> None:
    """hassfest: an imported integration must be in dependencies or after_dependencies."""
    allowed = (
        ALLOWED_USED_COMPONENTS
        | set(MANIFEST.get("dependencies", []))
        | set(MANIFEST.get("after_dependencies", []))
    )
    allowed |= {
        domain
        for domain, keys in DISCOVERY_INTEGRATIONS.items()
        if any(key in MANIFEST for key in keys)
    }
    problems = []
    for path, tree in modules():
        collector = _ComponentImports()
        collector.visit(tree)
        for domain in sorted(collector.found - allowed):
            # A platform of this integration may import its own entity component.
            if not (PACKAGE / f"{domain}.py").is_file() and not (PACKAGE / domain).is_dir():
                problems.append(f"{path.name} imports {domain}, which is not a dependency")
    assert not problems, "\n".join(problems)


def test_services_yaml_matches_registrations() -> None:
    """hassfest: code that registers service actions needs services.yaml, and only then."""
    registering = sorted(
        path.name
        for path, tree in modules()
        if any(call_name(call) in SERVICE_REGISTRATIONS for call in calls(tree))
    )
    has_yaml = (PACKAGE / "services.yaml").is_file()
    assert bool(registering) == has_yaml, (
        f"services.yaml {'exists' if has_yaml else 'is missing'}; "
        f"modules registering services: {registering}"
    )


def test_config_schema_with_async_setup() -> None:
    """hassfest: an integration with async_setup and a config flow defines CONFIG_SCHEMA."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    names = {node.name for node in tree.body if isinstance(node, ast.AsyncFunctionDef)}
    assigned = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    if "async_setup" in names:
        assert "CONFIG_SCHEMA" in assigned, "async_setup without CONFIG_SCHEMA"


def test_json_files_parse() -> None:
    """hassfest: every JSON file of the integration parses."""
    for path in PACKAGE.rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))


def test_quality_scale_lists_every_rule() -> None:
    """Our self-assessment covers every rule; exemptions say why."""
    rules = yaml.safe_load((PACKAGE / "quality_scale.yaml").read_text(encoding="utf-8"))["rules"]
    assert set(rules) == QUALITY_SCALE_RULES, (
        f"missing: {sorted(QUALITY_SCALE_RULES - set(rules))}, "
        f"unknown: {sorted(set(rules) - QUALITY_SCALE_RULES)}"
    )
    for rule, value in rules.items():
        status = value if isinstance(value, str) else value["status"]
        assert status in {"done", "todo", "exempt"}, f"{rule}: unknown status {status!r}"
        if status == "exempt":
            assert isinstance(value, dict), f"{rule}: exempt needs a comment saying why"
            assert value.get("comment"), f"{rule}: exempt needs a comment saying why"


# -- translations -------------------------------------------------------------------------


def test_translation_file_rules() -> None:
    """hassfest: known sections, key syntax, no HTML, URLs, quotes, references or padding."""
    problems = [f"unknown section {key!r}" for key in EN if key not in TRANSLATION_SECTIONS]
    for path, key, value in strings(EN):
        if not RE_TRANSLATION_KEY.match(key):
            problems.append(f"{path}: key must match [a-z0-9-_] without edge or double -/_")
        if isinstance(value, dict):
            continue
        if not isinstance(value, str):
            problems.append(f"{path}: value is not a string")
            continue
        checks = {
            "contains HTML": RE_HTML.search(value),
            "contains a URL; use a placeholder": RE_URL.search(value),
            "has a placeholder in single quotes": RE_PLACEHOLDER_IN_SINGLE_QUOTES.search(value),
            "references another key; custom integrations need literal text": RE_REFERENCE.search(
                value
            ),
            "has leading or trailing spaces": value != value.strip(),
            "has a placeholder that is no identifier": any(
                not name.isidentifier() for name in placeholders(value)
            ),
        }
        problems += [f"{path}: {what}" for what, found in checks.items() if found]
    for flow in ("config", "options"):
        for step_id, step in (lookup(EN, flow, "step") or {}).items():
            extra = set(step.get("data_description", {})) - set(step.get("data", {}))
            problems += [
                f"{flow}.step.{step_id}.data_description.{key} not in data" for key in extra
            ]
    assert not problems, "\n".join(problems)


type UsedKey = tuple[str, tuple[str, ...], set[str]]


def _keys_of_call(module: Path, call: ast.Call, flow: str) -> Iterator[UsedKey]:
    """Yield the translation keys one call uses, with the placeholders it gives.

    `flow` is the translation section of the flow the call is in: config or options.
    """
    name = call_name(call)
    key = literal(keyword(call, "translation_key"))
    if key and keyword(call, "translation_domain") is not None:
        given = keyword(call, "translation_placeholders")
        names = (
            {literal(k) or "" for k in given.keys if k} if isinstance(given, ast.Dict) else set()
        )
        yield module.name, ("exceptions", key, "message"), names
    elif key and name.endswith("EntityDescription"):
        # Entities of a platform module take their names from entity.<platform>.
        yield module.name, ("entity", module.stem, key, "name"), set()
    defaults = {
        "async_show_form": ("step_id", "step", None),
        "async_abort": ("reason", "abort", None),
        "_abort_if_unique_id_configured": ("error", "abort", "already_configured"),
        "_abort_if_unique_id_mismatch": ("reason", "abort", "unique_id_mismatch"),
        # Without a reason these abort with HA's own reauth/reconfigure strings.
        "async_update_and_abort": ("reason", "abort", None),
        "async_update_reload_and_abort": ("reason", "abort", None),
    }
    if name in defaults:
        argument, section, default = defaults[name]
        if value := literal(keyword(call, argument)) or default:
            yield module.name, (flow, section, value), set()


def _options_flow_nodes(tree: ast.Module) -> set[int]:
    """Return the ids of the nodes inside options flows, whose strings are under `options`."""
    return {
        id(node)
        for cls in ast.walk(tree)
        if isinstance(cls, ast.ClassDef)
        and any(getattr(base, "id", None) == "OptionsFlow" for base in cls.bases)
        for node in ast.walk(cls)
    }


def _used_translation_keys() -> Iterator[UsedKey]:
    """Yield (module, translation path, placeholders given) for every key the code uses."""
    for path, tree in modules():
        options_flow = _options_flow_nodes(tree)
        for node in ast.walk(tree):
            flow = "options" if id(node) in options_flow else "config"
            if isinstance(node, ast.Call):
                yield from _keys_of_call(path, node, flow)
            elif (
                isinstance(node, ast.Assign)
                and any(
                    getattr(target, "id", None) == "_attr_translation_key"
                    for target in node.targets
                )
                and (key := literal(node.value))
            ):
                yield path.name, ("entity", path.stem, key, "name"), set()
            elif isinstance(node, ast.Dict) and path.name == "config_flow.py":
                # Flow errors are {"base": "<key>"} literals.
                for dict_key, value in zip(node.keys, node.values, strict=True):
                    if literal(dict_key) == "base" and (error := literal(value)):
                        yield path.name, (flow, "error", error), set()


def test_translation_keys_used_in_code_exist() -> None:
    """Every step, error, abort, entity and exception key the code uses is in en.json."""
    problems = []
    for module, path, given in _used_translation_keys():
        value = lookup(EN, *path)
        dotted = ".".join(path)
        if value is None:
            problems.append(f"{module} uses {dotted}, which en.json lacks")
        elif path[0] == "exceptions" and (missing := placeholders(value) - given):
            problems.append(f"{module} raises {dotted} without placeholders {sorted(missing)}")
    assert not problems, "\n".join(problems)


def test_flow_errors_double_as_abort_reasons() -> None:
    """Discovery aborts with the error it met, so every error must be an abort reason too."""
    source = (PACKAGE / "config_flow.py").read_text(encoding="utf-8")
    dynamic_abort = any(
        call_name(call) == "async_abort" and literal(keyword(call, "reason")) is None
        for call in calls(ast.parse(source))
    )
    if dynamic_abort:
        errors = set(lookup(EN, "config", "error") or {})
        aborts = set(lookup(EN, "config", "abort") or {})
        assert errors <= aborts, f"errors missing from config.abort: {sorted(errors - aborts)}"


def test_icons() -> None:
    """hassfest: icons are `mdi:` icons; they belong to entity keys the code uses."""
    problems = [
        f"icons.json {path} is not an mdi: icon"
        for path, _, value in strings(ICONS)
        if isinstance(value, str) and not value.startswith("mdi:")
    ]
    used = {path[1:3] for _, path, _ in _used_translation_keys() if path[0] == "entity"}
    for platform, keys in ICONS.get("entity", {}).items():
        problems += [
            f"icons.json entity.{platform}.{key} is no translation key of the code"
            for key in keys
            if (platform, key) not in used
        ]
    assert not problems, "\n".join(problems)


def test_brand_icon() -> None:
    """HACS and HA's brands proxy (2026.3+) use brand/icon.png, a 256x256 PNG."""
    data = (PACKAGE / "brand" / "icon.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "brand/icon.png is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (256, 256), f"brand/icon.png is {width}x{height}, not 256x256"
