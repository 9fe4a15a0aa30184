"""KITTY's own checker for Home Assistant app ("add-on") folders.

Written from the documented rules: the app configuration docs of the Home
Assistant developer site (keys, defaults, the options/schema grammar,
translations) and the extra rules frenck's add-on linter enforces (no key set
to its default, no `watchdog`, no `webui` with `ingress`, ...). The linter
itself needs Docker and its schema file is not ours to copy, hence this.

It also holds KITTY's conventions: an app `kitty_<service>` pip-installs
`kittyai[<service>]==<version>` and runs `python3 -m kittyai.<service>` from
`rootfs/etc/services.d/<service>/run`.

Every check returns a list of problems (empty when fine), so a test shows all
of them at once instead of stopping at the first.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
import re
import stat
from typing import Any

import yaml

REQUIRED_KEYS = ("name", "version", "slug", "description", "arch")
# armhf, armv7 and i386 are deprecated since Home Assistant 2025.12.
ARCHES = frozenset({"aarch64", "amd64"})
SLUG_RE = re.compile(r"[-_.A-Za-z0-9]+")
SERVICE_RE = re.compile(r"(mqtt|mysql):(provide|want|need)")
PORT_RE = re.compile(r"\d{1,5}/(tcp|udp)")
MAP_TYPES = frozenset(
    {
        "addon_config",
        "all_addon_configs",
        "homeassistant_config",
        "ssl",
        "addons",
        "backup",
        "share",
        "media",
        "data",
    }
)
REPOSITORY_KEYS = frozenset({"name", "url", "maintainer"})
# The CAD kernel (OCP, CadQuery) ships glibc wheels only: no Alpine base.
GLIBC_APPS = frozenset({"kitty_cad"})
GLIBC_BASE_RE = re.compile(r"debian|ubuntu")
# Nested options: at most a list of dicts (or a dict of lists).
MAX_SCHEMA_DEPTH = 2
PINNED_INSTALL_RE = re.compile(r"kittyai\[(?P<extras>[a-z,]+)\]==(?P<version>[^\s\"']+)")
REQUIRED_LABELS = frozenset(
    {
        "io.hass.version",
        "io.hass.type",
        "io.hass.arch",
        # GHCR links the image to its repository through this label.
        "org.opencontainers.image.source",
    }
)
FINISH_MARKERS = (
    # The Supervisor reads the exit code from here once the container stops.
    "/run/s6-linux-init-container-results/exitcode",
    "/run/s6/basedir/bin/halt",
)


# --- config.yaml -----------------------------------------------------------

_NO_DEFAULT = object()


@dataclass(frozen=True, slots=True)
class Key:
    """A config.yaml key: what its value may look like, and its default."""

    valid: Callable[[Any], bool]
    default: Any = _NO_DEFAULT


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _mapping(value: Any) -> bool:
    return isinstance(value, dict)


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(_text(item) for item in value)


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and value in choices


def _whole(low: int, high: int) -> Callable[[Any], bool]:
    return lambda value: _is_int(value) and low <= value <= high


def _is_int(value: Any) -> bool:
    # bool is an int subclass; `true` is never a number here.
    return isinstance(value, int) and not isinstance(value, bool)


def _https(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("https://")


# Every key the Supervisor documents, with its default where it has one.
KEYS: dict[str, Key] = {
    "name": Key(_text),
    "version": Key(_text),
    "slug": Key(_text),
    "description": Key(_text),
    "arch": Key(_texts),
    "url": Key(_https),
    "init": Key(_flag, True),
    "startup": Key(
        _one_of("initialize", "system", "services", "application", "once"), "application"
    ),
    "boot": Key(_one_of("auto", "manual", "manual_only"), "auto"),
    "services": Key(_texts),
    "discovery": Key(_texts),
    "hassio_api": Key(_flag, False),
    "hassio_role": Key(
        _one_of("default", "homeassistant", "backup", "manager", "admin"), "default"
    ),
    "homeassistant_api": Key(_flag, False),
    "auth_api": Key(_flag, False),
    "ingress": Key(_flag, False),
    "ingress_port": Key(_whole(0, 65535), 8099),
    "ingress_entry": Key(_text, "/"),
    "ingress_stream": Key(_flag, False),
    "panel_icon": Key(_text, "mdi:puzzle"),
    "panel_title": Key(_text),
    "panel_admin": Key(_flag, True),
    "webui": Key(_text),
    "ports": Key(_mapping),
    "ports_description": Key(_mapping),
    "map": Key(lambda value: isinstance(value, list)),
    "options": Key(_mapping, {}),
    "schema": Key(lambda value: _mapping(value) or value is False, {}),
    "backup": Key(_one_of("hot", "cold"), "hot"),
    "backup_pre": Key(_text),
    "backup_post": Key(_text),
    "backup_exclude": Key(_texts),
    "watchdog": Key(_text),
    "image": Key(_text),
    "timeout": Key(_whole(10, 300), 10),
    "stage": Key(_one_of("stable", "experimental", "deprecated"), "stable"),
    "homeassistant": Key(_text),
    "tmpfs": Key(_flag, False),
    "environment": Key(_mapping),
    "devices": Key(_texts),
    "video": Key(_flag, False),
    "audio": Key(_flag, False),
    "usb": Key(_flag, False),
    "uart": Key(_flag, False),
    "gpio": Key(_flag, False),
    "privileged": Key(_texts),
    "full_access": Key(_flag, False),
    "host_network": Key(_flag, False),
    "host_dbus": Key(_flag, False),
    "docker_api": Key(_flag, False),
    "breaking_versions": Key(_texts),
    "ulimits": Key(_mapping),
    "journald": Key(_flag, False),
    "machine": Key(_texts),
    "realtime": Key(_flag, False),
    "stdin": Key(_flag, False),
    "legacy": Key(_flag, False),
    # true: the Supervisor applies its own AppArmor profile.
    "apparmor": Key(lambda value: _flag(value) or _text(value), True),
    "advanced": Key(_flag),
}

# Known keys that must still go.
OBSOLETE_KEYS = {
    "watchdog": "is obsolete: use a Dockerfile HEALTHCHECK instead",
    "advanced": "is ignored since Supervisor 2026.03: remove it",
}


def _is_default(value: Any, default: Any) -> bool:
    # type() keeps `0 == False` and `1 == True` apart.
    return default is not _NO_DEFAULT and type(value) is type(default) and value == default


def check_config(config: Any, folder_name: str) -> list[str]:
    """Check a parsed config.yaml of the app in folder `folder_name`."""
    if not isinstance(config, dict):
        return ["config.yaml: not a mapping"]
    problems = [
        f"config.yaml: missing required key {key!r}" for key in REQUIRED_KEYS if key not in config
    ]
    for key, value in config.items():
        rule = KEYS.get(key)
        if rule is None:
            problems.append(f"config.yaml: unknown key {key!r}")
        elif not rule.valid(value):
            problems.append(f"config.yaml: {key}: invalid value {value!r}")
        elif _is_default(value, rule.default):
            problems.append(f"config.yaml: {key}: {value!r} is the default, remove the key")
    if problems:
        # The rules below rely on every value having its documented shape.
        return problems
    return _check_rules(config, folder_name)


def _check_rules(config: dict[str, Any], folder_name: str) -> list[str]:
    problems = [f"config.yaml: {key} {why}" for key, why in OBSOLETE_KEYS.items() if key in config]
    if config.get("init") is not False:
        problems.append("config.yaml: init must be false, s6-overlay is the init")
    slug = config["slug"]
    if not SLUG_RE.fullmatch(slug):
        problems.append(f"config.yaml: slug {slug!r} has characters outside [-_.A-Za-z0-9]")
    if slug != folder_name:
        problems.append(f"config.yaml: slug {slug!r} differs from its folder {folder_name!r}")
    arch = config["arch"]
    if not arch or len(set(arch)) != len(arch) or not set(arch) <= ARCHES:
        problems.append(f"config.yaml: arch {arch!r} must list aarch64 and/or amd64 once each")
    if ":" in config.get("image", "").rpartition("/")[2]:
        problems.append("config.yaml: image must have no tag, the Supervisor appends the version")
    problems += [
        f"config.yaml: services entry {entry!r} is not (mqtt|mysql):(provide|want|need)"
        for entry in config.get("services", [])
        if not SERVICE_RE.fullmatch(entry)
    ]
    problems += _check_ports(config)
    problems += _check_map(config.get("map", []))
    if "webui" in config and config.get("ingress"):
        problems.append("config.yaml: webui and ingress exclude each other")
    if config.get("ingress_port") == 0 and not config.get("host_network"):
        problems.append("config.yaml: ingress_port 0 needs host_network")
    if config.get("backup") == "cold" and ({"backup_pre", "backup_post"} & config.keys()):
        problems.append("config.yaml: backup_pre/backup_post do not work with a cold backup")
    problems += check_options(config.get("options", {}), config.get("schema", {}))
    return problems


def _check_ports(config: dict[str, Any]) -> list[str]:
    ports = config.get("ports", {})
    problems = [
        f"config.yaml: ports {key!r}: {value!r} is not <port>/(tcp|udp): <host port or null>"
        for key, value in ports.items()
        if not PORT_RE.fullmatch(str(key)) or not (value is None or _whole(1, 65535)(value))
    ]
    problems += [
        f"config.yaml: ports_description {key!r} is not in ports"
        for key in config.get("ports_description", {})
        if key not in ports
    ]
    return problems


def _check_map(entries: list[Any]) -> list[str]:
    problems = []
    for entry in entries:
        if isinstance(entry, str):
            kind, _, mode = entry.partition(":")
            valid = kind in MAP_TYPES and mode in ("", "rw", "ro")
        else:
            valid = (
                isinstance(entry, dict)
                and entry.get("type") in MAP_TYPES
                and set(entry) <= {"type", "read_only", "path"}
                and _flag(entry.get("read_only", True))
            )
        if not valid:
            problems.append(f"config.yaml: map entry {entry!r} is not a valid folder mapping")
    return problems


# --- options and schema ----------------------------------------------------

ELEMENT_RE = re.compile(r"(?P<kind>[a-z]+)(?:\((?P<args>.*)\))?(?P<optional>\?)?")
_UINT = r"\d+"
_DECIMAL = r"\d+(?:\.\d+)?"
_DEVICE_FILTER_RE = re.compile(r"subsystem=[a-z]+")


def _no_arguments(args: str | None) -> dict[str, Any]:
    if args is not None:
        raise ValueError("this type takes no arguments")
    return {}


def _bounds(number: str) -> Callable[[str | None], dict[str, Any]]:
    bounds_re = re.compile(rf"(?P<low>{number})?,(?P<high>{number})?")

    def parse(args: str | None) -> dict[str, Any]:
        if args is None:
            return {}
        found = bounds_re.fullmatch(args)
        if found is None:
            raise ValueError("bounds must be (min,max), either may be empty")
        low, high = (None if bound is None else float(bound) for bound in found.groups())
        if low is not None and high is not None and low > high:
            raise ValueError("min is above max")
        return {"low": low, "high": high}

    return parse


def _choices(args: str | None) -> dict[str, Any]:
    choices = tuple((args or "").split("|"))
    if not all(choices):
        raise ValueError("choices must be non-empty, a|b|c")
    return {"choices": choices}


def _pattern(args: str | None) -> dict[str, Any]:
    if not args:
        raise ValueError("a regular expression is needed")
    try:
        return {"pattern": re.compile(args)}
    except re.error as err:
        raise ValueError(f"bad regular expression ({err})") from None


def _device_filter(args: str | None) -> dict[str, Any]:
    if args is not None and not _DEVICE_FILTER_RE.fullmatch(args):
        raise ValueError("the filter must be subsystem=<name>")
    return {}


# Each element type and how its arguments parse; str and password bounds are
# lengths.
_ARGUMENTS: dict[str, Callable[[str | None], dict[str, Any]]] = {
    "bool": _no_arguments,
    "email": _no_arguments,
    "url": _no_arguments,
    "port": _no_arguments,
    "str": _bounds(_UINT),
    "password": _bounds(_UINT),
    "int": _bounds(_UINT),
    "float": _bounds(_DECIMAL),
    "list": _choices,
    "match": _pattern,
    "device": _device_filter,
}


def _number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


# What a default must be for each element type; the rest take text.
_VALUE_TYPES: dict[str, Callable[[Any], bool]] = {
    "bool": _flag,
    "port": _whole(1, 65535),
    "int": _is_int,
    "float": _number,
}


@dataclass(frozen=True, slots=True)
class Element:
    """One parsed schema element, e.g. `int(1,16)?`."""

    kind: str
    optional: bool
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None

    def accepts(self, value: Any) -> bool:
        """Tell whether `value` is a valid default for this element."""
        if not _VALUE_TYPES.get(self.kind, lambda v: isinstance(v, str))(value):
            return False
        if self.choices:
            return value in self.choices
        if self.pattern is not None:
            return self.pattern.fullmatch(value) is not None
        measure = len(value) if isinstance(value, str) else value
        return (self.low is None or measure >= self.low) and (
            self.high is None or measure <= self.high
        )


def parse_element(text: str) -> Element:
    """Parse one schema element; ValueError says what is wrong with it."""
    found = ELEMENT_RE.fullmatch(text)
    if found is None:
        raise ValueError(f"{text!r} is not a schema element")
    kind = found["kind"]
    if kind not in _ARGUMENTS:
        raise ValueError(f"{text!r}: unknown type {kind!r}")
    try:
        arguments = _ARGUMENTS[kind](found["args"])
    except ValueError as err:
        raise ValueError(f"{text!r}: {err}") from None
    return Element(kind, found["optional"] is not None, **arguments)


def _check_schema(path: str, spec: Any, depth: int = 0) -> list[str]:
    if isinstance(spec, str):
        try:
            parse_element(spec)
        except ValueError as err:
            return [f"config.yaml: schema {path}: {err}"]
        return []
    if isinstance(spec, list) and len(spec) == 1 and not isinstance(spec[0], list):
        children = {f"{path}[]": spec[0]}
    elif isinstance(spec, dict) and spec:
        children = {f"{path}.{key}": value for key, value in spec.items()}
    else:
        return [f"config.yaml: schema {path}: {spec!r} is not an element, [one item] or a dict"]
    if depth >= MAX_SCHEMA_DEPTH:
        return [f"config.yaml: schema {path}: nested deeper than {MAX_SCHEMA_DEPTH} levels"]
    return [
        problem
        for child, value in children.items()
        for problem in _check_schema(child, value, depth + 1)
    ]


def check_options(options: dict[str, Any], schema: dict[str, Any] | bool) -> list[str]:
    """Check options against the schema; nested defaults are not type-checked."""
    if schema is False:
        return []
    problems = [
        f"config.yaml: option {key!r} has no schema entry" for key in options if key not in schema
    ]
    for key, spec in schema.items():
        problems += _check_schema(key, spec)
    for key, value in options.items():
        spec = schema.get(key)
        if not isinstance(spec, str):
            continue  # nested or missing: reported above, or not type-checked
        try:
            element = parse_element(spec)
        except ValueError:
            continue  # reported above
        if element.optional:
            # A default, even null, would make the option required.
            problems.append(f"config.yaml: option {key!r} is optional (?) but has a default")
        elif not element.accepts(value):
            problems.append(f"config.yaml: option {key!r}: {value!r} does not fit {spec!r}")
    return problems


# --- the other files of an app ---------------------------------------------


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def check_translations(folder: Path, config: dict[str, Any]) -> list[str]:
    """Every option and every port needs an English name and description."""
    path = folder / "translations" / "en.yaml"
    if not path.is_file():
        return ["translations/en.yaml: missing"]
    try:
        data = _load_yaml(path)
    except yaml.YAMLError as err:
        return [f"translations/en.yaml: not valid YAML ({err})"]
    if not isinstance(data, dict) or not set(data) <= {"configuration", "network"}:
        return ["translations/en.yaml: only configuration and network belong at the top"]
    problems = []
    configuration = data.get("configuration") or {}
    schema = config.get("schema", {})
    options = set(config.get("options", {})) | set(schema if isinstance(schema, dict) else {})
    for key in sorted(options):
        entry = configuration.get(key)
        if not (
            isinstance(entry, dict) and _text(entry.get("name")) and _text(entry.get("description"))
        ):
            problems.append(f"translations/en.yaml: option {key!r} needs a name and a description")
    problems += [
        f"translations/en.yaml: {key!r} is not an option"
        for key in configuration
        if key not in options
    ]
    network = data.get("network") or {}
    ports = config.get("ports", {})
    problems += [
        f"translations/en.yaml: port {port!r} needs a description"
        for port in ports
        if not _text(network.get(port))
    ]
    problems += [
        f"translations/en.yaml: {port!r} is not a port" for port in network if port not in ports
    ]
    return problems


def check_docs(folder: Path, config: dict[str, Any]) -> list[str]:
    """DOCS.md fills the Documentation tab; CHANGELOG.md is shown on updates."""
    problems = []
    docs = folder / "DOCS.md"
    if not docs.is_file() or not docs.read_text(encoding="utf-8").strip():
        problems.append("DOCS.md: missing or empty")
    changelog = folder / "CHANGELOG.md"
    heading = re.compile(rf"^## \[?{re.escape(config['version'])}\]?(\s|$)", re.MULTILINE)
    if not changelog.is_file() or not heading.search(changelog.read_text(encoding="utf-8")):
        problems.append(f"CHANGELOG.md: missing or has no '## [{config['version']}]' section")
    return problems


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """Split a Dockerfile into (INSTRUCTION, arguments), joining continued lines."""
    instructions = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker also skips these inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        word, _, args = (current + stripped).partition(" ")
        instructions.append((word.upper(), args.strip()))
        current = ""
    return instructions


def check_dockerfile(folder: Path, config: dict[str, Any]) -> list[str]:
    """Pinned base, pinned library release, rootfs, labels and a HEALTHCHECK."""
    path = folder / "Dockerfile"
    if not path.is_file():
        return ["Dockerfile: missing"]
    instructions = dockerfile_instructions(path.read_text(encoding="utf-8"))
    problems = []
    bases = [
        next(word for word in args.split() if not word.startswith("--"))
        for kind, args in instructions
        if kind == "FROM"
    ]
    if not bases:
        problems.append("Dockerfile: no FROM")
    for base in bases:
        tag = base.rpartition("/")[2].partition(":")[2]
        pinned = "@sha256:" in base or tag not in ("", "latest")
        if "$" in base or not pinned:
            problems.append(f"Dockerfile: FROM {base} is not an explicit, pinned base")
    if config["slug"] in GLIBC_APPS and not (bases and GLIBC_BASE_RE.search(bases[-1])):
        problems.append("Dockerfile: this app needs a glibc (Debian or Ubuntu) base")

    service = service_of(config)
    runs = " ".join(args for kind, args in instructions if kind == "RUN")
    install = PINNED_INSTALL_RE.search(runs) if "pip install" in runs else None
    if install is None:
        problems.append(f'Dockerfile: no pip install of "kittyai[{service}]=={config["version"]}"')
    else:
        if service not in install["extras"].split(","):
            problems.append(f"Dockerfile: kittyai is installed without the {service!r} extra")
        if install["version"] != config["version"]:
            problems.append(
                f"Dockerfile: installs kittyai {install['version']}, "
                f"config.yaml says {config['version']}"
            )

    if ("COPY", "rootfs /") not in instructions:
        problems.append("Dockerfile: no 'COPY rootfs /'")
    healthchecks = [args for kind, args in instructions if kind == "HEALTHCHECK"]
    if not any("/health" in args and args.split()[0].upper() != "NONE" for args in healthchecks):
        problems.append("Dockerfile: no HEALTHCHECK against /health")
    labels = " ".join(args for kind, args in instructions if kind == "LABEL")
    problems += [
        f"Dockerfile: label {label} is missing"
        for label in sorted(REQUIRED_LABELS)
        if not re.search(rf"(^|\s){re.escape(label)}=", labels)
    ]
    if not re.search(r"io\.hass\.type=\"?app\b", labels):
        problems.append('Dockerfile: io.hass.type must be "app"')
    return problems


def service_of(config: dict[str, Any]) -> str:
    """Return the kittyai service an app runs: `kitty_router` runs `router`."""
    return config["slug"].removeprefix("kitty_")


def check_scripts(folder: Path, config: dict[str, Any]) -> list[str]:
    """The s6 service: run execs the module, finish stops the app on a crash."""
    service = service_of(config)
    scripts = Path("rootfs", "etc", "services.d", service)
    problems = []
    texts = {}
    for name in ("run", "finish"):
        path = folder / scripts / name
        if not path.is_file():
            problems.append(f"{scripts / name}: missing")
            continue
        if not path.stat().st_mode & stat.S_IXUSR:
            problems.append(f"{scripts / name}: not executable")
        texts[name] = path.read_text(encoding="utf-8")
    if "run" in texts:
        run = texts["run"]
        if not run.startswith("#!/usr/bin/with-contenv bashio\n"):
            problems.append(f"{scripts / 'run'}: must start with #!/usr/bin/with-contenv bashio")
        if not re.search(rf"^\s*exec python3 -m kittyai\.{service}(\s|$)", run, re.MULTILINE):
            problems.append(f"{scripts / 'run'}: does not exec python3 -m kittyai.{service}")
    if "finish" in texts:
        finish = texts["finish"]
        if not re.match(r"#!/usr/bin/(env|with-contenv) bashio\n", finish):
            problems.append(f"{scripts / 'finish'}: must be a bashio script")
        problems += [
            f"{scripts / 'finish'}: does not use {marker}"
            for marker in FINISH_MARKERS
            if marker not in finish
        ]
    return problems


# --- entry points ----------------------------------------------------------


def app_folders(root: Path) -> list[Path]:
    """Return the app folders of a repository: those holding a config.yaml."""
    return sorted(path.parent for path in root.glob("*/config.yaml"))


def lint_app(folder: Path) -> list[str]:
    """Check one app folder; an empty list means it passes."""
    path = folder / "config.yaml"
    if not path.is_file():
        return ["config.yaml: missing"]
    try:
        config = _load_yaml(path)
    except yaml.YAMLError as err:
        return [f"config.yaml: not valid YAML ({err})"]
    problems = check_config(config, folder.name)
    if problems:
        return problems  # the other files are checked against a sound config
    return [
        *check_translations(folder, config),
        *check_docs(folder, config),
        *check_dockerfile(folder, config),
        *check_scripts(folder, config),
    ]


def lint_repository(root: Path) -> list[str]:
    """Check repository.yaml, which the Supervisor reads at the root."""
    path = root / "repository.yaml"
    if not path.is_file():
        return ["repository.yaml: missing"]
    data = _load_yaml(path)
    if not isinstance(data, dict):
        return ["repository.yaml: not a mapping"]
    problems = [
        f"repository.yaml: unknown key {key!r}" for key in data if key not in REPOSITORY_KEYS
    ]
    if not _text(data.get("name")):
        problems.append("repository.yaml: name is required")
    if "url" in data and not _https(data["url"]):
        problems.append("repository.yaml: url must be an https URL")
    if "maintainer" in data and not _text(data["maintainer"]):
        problems.append("repository.yaml: maintainer must be text")
    if not app_folders(root):
        problems.append("repository.yaml: no app folders next to it")
    return problems
