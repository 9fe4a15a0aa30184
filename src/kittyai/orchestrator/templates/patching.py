"""Files under Home Assistant's configuration: which may be patched, applying a diff, writing.

Pure file and text logic for the `config_change` template; it knows nothing of
runs or of Home Assistant's API.
"""

from collections.abc import Sequence
from dataclasses import dataclass
import difflib
import hashlib
import os
from pathlib import Path, PurePosixPath
import re
import stat
import tempfile

# Whatever the options allow: Home Assistant's secrets (looked up from any folder a
# YAML file is in) and its internal state.
NEVER_PATCHED = ("**/secrets.yaml", ".storage", ".storage/**")
# The files Home Assistant's UI editors write, and the domain that reloads each.
RELOAD_DOMAINS = {
    "automations.yaml": "automation",
    "scripts.yaml": "script",
    "scenes.yaml": "scene",
}
NEW_FILE_MODE = 0o644
_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_NO_NEWLINE = "\\ No newline at end of file"


class PathNotAllowedError(Exception):
    """The path is outside what `config_change` may touch."""


class PatchDoesNotApplyError(Exception):
    """The diff does not fit the file as it is now."""

    def __init__(self, message: str, hunk: str | None = None) -> None:
        """Refuse with `message`; `hunk` is the diff text of the hunk that failed."""
        super().__init__(message if hunk is None else f"{message}:\n{hunk}")
        self.hunk = hunk


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 of `data`, hex."""
    return hashlib.sha256(data).hexdigest()


def default_reload_domain(relative: str) -> str | None:
    """Return the domain whose reload applies a change to `relative`; None: Core restarts."""
    return RELOAD_DOMAINS.get(relative)


def resolve_config_path(config_dir: Path, relative: str, allowed: Sequence[str]) -> Path:
    """Return the file `relative` names in `config_dir`, if `config_change` may touch it.

    `allowed` holds globs relative to the folder (`**` spans folders). The path must
    be relative, without `..`, allowed, and not Home Assistant's secrets or storage;
    a symlink must stay in the folder, and what it points to must be allowed too.

    Raises:
        PathNotAllowedError: saying which rule refused the path.
    """
    candidate = _relative_path(relative)
    _check_allowed(candidate, allowed, relative)
    root = config_dir.resolve()
    target = (root / candidate).resolve()
    if not target.is_relative_to(root):
        raise PathNotAllowedError(f"{relative} leads out of the configuration folder")
    resolved = PurePosixPath(target.relative_to(root).as_posix())
    if resolved != candidate:
        # A symlink: what gets written is the file it points to.
        _check_allowed(resolved, allowed, f"{relative} (a link to {resolved})")
    if target.exists() and not target.is_file():
        raise PathNotAllowedError(f"{relative} is not a file")
    return target


def _relative_path(relative: str) -> PurePosixPath:
    if not relative or "\\" in relative or "\0" in relative:
        raise PathNotAllowedError(f"{relative!r} is not a path relative to the configuration")
    path = PurePosixPath(relative)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", relative):
        raise PathNotAllowedError(f"{relative} is absolute; give a path relative to the folder")
    if ".." in path.parts:
        raise PathNotAllowedError(f"{relative} contains '..'")
    if path.parts in {(), (".",)}:
        raise PathNotAllowedError(f"{relative!r} names no file")
    return path


def _check_allowed(path: PurePosixPath, allowed: Sequence[str], shown: str) -> None:
    if any(path.full_match(pattern) for pattern in NEVER_PATCHED):
        raise PathNotAllowedError(
            f"{shown}: Home Assistant's secrets and storage are never patched"
        )
    if not any(path.full_match(pattern) for pattern in allowed):
        raise PathNotAllowedError(
            f"{shown} is not in policies.config_change.allowed_paths ({', '.join(allowed)})"
        )


@dataclass(frozen=True, slots=True)
class _Hunk:
    old_start: int
    old_lines: list[str]
    new_lines: list[str]
    # Whether the last old/new line lacks its line ending.
    old_ends_open: bool
    new_ends_open: bool
    text: str


def apply_unified_diff(original: str, diff: str) -> str:
    """Return `original` with the unified `diff` applied.

    Each hunk's context and removed lines must match the text exactly; a hunk may sit
    a few lines off from where its header says (the file grew or shrank above it),
    never fuzzily. The line ending of added lines is the file's own.

    Raises:
        PatchDoesNotApplyError: naming the hunk that does not fit.
    """
    hunks = _parse_hunks(diff)
    lines = original.splitlines(keepends=True)
    newline = _newline_of(lines)
    result: list[str] = []
    position = 0
    for hunk in hunks:
        # Line numbers are 1-based; a hunk without old lines inserts after `old_start`.
        expected = hunk.old_start - 1 if hunk.old_lines else hunk.old_start
        found = _find(lines, hunk, expected, position)
        if found is None:
            raise PatchDoesNotApplyError(
                "the diff does not apply to the file as it is now", hunk.text
            )
        result.extend(lines[position:found])
        result.extend(_with_endings(hunk.new_lines, newline, open_end=hunk.new_ends_open))
        position = found + len(hunk.old_lines)
    result.extend(lines[position:])
    if position < len(lines) and hunks and hunks[-1].new_ends_open:
        raise PatchDoesNotApplyError(
            "the diff ends the file early (no newline at the end, yet lines follow)",
            hunks[-1].text,
        )
    return "".join(result)


def _parse_hunks(diff: str) -> list[_Hunk]:
    lines = diff.splitlines()
    hunks: list[_Hunk] = []
    index = 0
    while index < len(lines):
        header = _HUNK_HEADER.match(lines[index])
        if header is None:
            # `diff --git`, `---`, `+++`, `index` lines and any preamble.
            index += 1
            continue
        old_count = 1 if header[2] is None else int(header[2])
        new_count = 1 if header[4] is None else int(header[4])
        start = index
        index += 1
        old: list[str] = []
        new: list[str] = []
        old_open = new_open = False
        last = ""
        while index < len(lines) and (len(old) < old_count or len(new) < new_count):
            line = lines[index]
            marker, text = (line[:1], line[1:]) if line else (" ", "")
            if marker == " ":
                old.append(text)
                new.append(text)
            elif marker == "-":
                old.append(text)
            elif marker == "+":
                new.append(text)
            elif line.startswith(_NO_NEWLINE):
                old_open, new_open = _mark_open(last, old_open, new_open)
            else:
                break
            last = marker
            index += 1
        if index < len(lines) and lines[index].startswith(_NO_NEWLINE):
            old_open, new_open = _mark_open(last, old_open, new_open)
            index += 1
        text = "\n".join(lines[start:index])
        if len(old) != old_count or len(new) != new_count:
            raise PatchDoesNotApplyError(
                "the hunk has other line counts than its header says", text
            )
        hunks.append(_Hunk(int(header[1]), old, new, old_open, new_open, text))
    if not hunks:
        raise PatchDoesNotApplyError("the diff has no hunks (`@@ -l,n +l,n @@` lines)")
    return hunks


def _mark_open(last: str, old_open: bool, new_open: bool) -> tuple[bool, bool]:
    """Apply a "No newline at end of file" marker to the side(s) of the line before it."""
    if last == "-":
        return True, new_open
    if last == "+":
        return old_open, True
    return True, True


def _find(lines: list[str], hunk: _Hunk, expected: int, start: int) -> int | None:
    """Return where the hunk's old lines are, the nearest to `expected` at or after `start`."""
    last_start = len(lines) - len(hunk.old_lines)
    candidates = range(start, last_start + 1)
    for at in sorted(candidates, key=lambda at: (abs(at - expected), at)):
        if _matches(lines, at, hunk):
            return at
    return None


def _matches(lines: list[str], at: int, hunk: _Hunk) -> bool:
    for offset, expected in enumerate(hunk.old_lines):
        line = lines[at + offset]
        if line.rstrip("\r\n") != expected:
            return False
        is_last_of_file = at + offset == len(lines) - 1
        is_last_of_hunk = offset == len(hunk.old_lines) - 1
        if is_last_of_hunk and hunk.old_ends_open and not (is_last_of_file and line == expected):
            return False
    return True


def _newline_of(lines: list[str]) -> str:
    for line in lines:
        if line.endswith("\r\n"):
            return "\r\n"
        if line.endswith("\n"):
            return "\n"
    return "\n"


def _with_endings(lines: list[str], newline: str, *, open_end: bool) -> list[str]:
    ended = [line + newline for line in lines]
    if open_end and ended:
        ended[-1] = lines[-1]
    return ended


def unified_diff(before: bytes, after: bytes, relative: str) -> str:
    """Return the unified diff from `before` to `after` of the file `relative`."""
    old = before.decode("utf-8", errors="replace").splitlines(keepends=True)
    new = after.decode("utf-8", errors="replace").splitlines(keepends=True)
    lines: list[str] = []
    for line in difflib.unified_diff(old, new, f"a/{relative}", f"b/{relative}"):
        if line.endswith("\n"):
            lines.append(line)
        else:
            lines.extend((line + "\n", _NO_NEWLINE + "\n"))
    return "".join(lines)


def file_mode(path: Path) -> int | None:
    """Return the permission bits of `path`; None when there is no such file."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None


def write_atomically(path: Path, data: bytes, mode: int | None) -> None:
    """Replace `path` with `data` in one step: readers see the old file or the new one.

    The new file gets `mode`, or `NEW_FILE_MODE` for a file that did not exist.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        Path(temporary).chmod(NEW_FILE_MODE if mode is None else mode)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def remove_file(path: Path) -> None:
    """Remove `path` if it is there, durably."""
    path.unlink(missing_ok=True)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename or removal in `folder` survive a power cut."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
