"""Run one CadQuery script a model wrote, locked down: `python -m kittyai.cad.sandbox_runner`.

`kittyai.cad.sandbox` starts this module in a process of its own and writes a
`SandboxJob` as JSON on its stdin. The runner answers on stdout with a line `ready`
once the CAD kernel is loaded (the script's time starts then), and a `SandboxReport`
as one line of JSON once the part is checked, exported and measured.

The script is guarded in layers, so that one that slips past a layer meets the next:

1. resource limits: address space, CPU time, file size, no core dumps;
2. a network namespace of its own, without interfaces, where permitted (as root);
3. the CAD kernel is imported before any guard, since it loads freely;
4. an audit hook refusing sockets, processes, signals, foreign code (ctypes), raised
   limits, file writes outside the output folder and reads outside Python's own;
5. the script runs with builtins whose `__import__` lets only cadquery and math in,
   and without `open`, `eval`, `exec`, `compile` and the other escape hatches.

Python's audit hooks are no sandbox by themselves (their documentation says so);
here they back the limits, the namespace and the parent's static check.
"""

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import math
import os
from pathlib import Path
import resource
import sys
import traceback
from types import ModuleType
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict

from kittyai.contract.cad import FileKind, PartMetrics

ALLOWED_MODULES = ("cadquery", "math")
# The filename the script is compiled with: traceback frames carrying it are the script's.
SCRIPT_FILENAME = "<part.py>"
READY = "ready"
# Names a script may not use, as names or attributes: each leads out of the sandbox.
BLOCKED_NAMES = frozenset(
    {
        "__import__",
        "breakpoint",
        "compile",
        "delattr",
        "eval",
        "exec",
        "getattr",
        "globals",
        "input",
        "locals",
        "open",
        "setattr",
        "vars",
    }
)
MIB = 1024 * 1024
# Importing cadquery takes 3 s of CPU on an idle machine; the CPU limit allows for it
# on a busy one, on top of the script's own time.
STARTUP_CPU_S = 60
MAX_FILE_BYTES = 256 * MIB
# Freed when the script runs out of memory, so the report can still be written.
MEMORY_RESERVE_BYTES = 16 * MIB
MAX_ERROR_LENGTH = 800

# Audit events refused outright, and what each one is, for the error message.
_REFUSED_EVENTS = {
    "subprocess.Popen": "starting a process",
    "_posixsubprocess.fork_exec": "starting a process",
    "os.system": "starting a process",
    "os.exec": "starting a process",
    "os.posix_spawn": "starting a process",
    "os.spawn": "starting a process",
    "os.fork": "forking",
    "os.forkpty": "forking",
    "os.kill": "sending a signal",
    "os.killpg": "sending a signal",
    "signal.pthread_kill": "sending a signal",
    "resource.setrlimit": "changing resource limits",
    "resource.prlimit": "changing resource limits",
    "os.setns": "changing namespaces",
    "os.unshare": "changing namespaces",
}
_REFUSED_PREFIXES = {"socket.": "network access", "ctypes.": "calling foreign code"}
# Audit events that change the file system, with the positions of their path
# arguments and of the directory descriptors those are relative to.
_MUTATIONS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "os.chflags": ((0,), ()),
    "os.chmod": ((0,), (2,)),
    "os.chown": ((0,), (3,)),
    "os.link": ((0, 1), (2, 3)),
    "os.mkdir": ((0,), (2,)),
    "os.remove": ((0,), (1,)),
    "os.removexattr": ((0,), ()),
    "os.rename": ((0, 1), (2, 3)),
    "os.rmdir": ((0,), (1,)),
    "os.setxattr": ((0,), ()),
    # The link's target is text; reads and writes through the link are checked.
    "os.symlink": ((1,), (2,)),
    "os.truncate": ((0,), ()),
    "os.utime": ((0,), (3,)),
    "shutil.rmtree": ((0,), (1,)),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class SandboxJob(BaseModel):
    """What the parent asks of the runner, on its stdin."""

    model_config = ConfigDict(extra="forbid")

    script: str
    # Absolute and resolved; the only folder the script's process may write to.
    out_dir: Path
    build_volume: tuple[float, float, float]
    density_g_cm3: float
    timeout_s: float
    memory_mb: int


class SandboxReport(BaseModel):
    """What the runner answers, as the last line of its stdout."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    error: str | None = None
    files: dict[FileKind, Path] = {}
    metrics: PartMetrics | None = None


def import_refusal(name: str, level: int = 0) -> str | None:
    """Return why a script may not import the module `name`, or None if it may.

    Args:
        name: The module's dotted name, as in `import name` or `from name import x`.
        level: How many dots lead a relative import; none are allowed.
    """
    allowed = " and ".join(ALLOWED_MODULES)
    if level:
        return f"relative imports are not allowed; only {allowed} may be imported"
    if name.partition(".")[0] in ALLOWED_MODULES:
        return None
    return f"import of {name!r} is not allowed; only {allowed} may be imported"


def describe_error(err: BaseException, *, memory_mb: int) -> str:
    """Return a short account of an exception the script raised, with the script's line.

    The line is that of the innermost frame of the script itself, so an error deep in
    CadQuery points at the script's call that led there.
    """
    if isinstance(err, SyntaxError):
        text, line = f"SyntaxError: {err.msg}", err.lineno
    else:
        frames = traceback.extract_tb(err.__traceback__)
        lines = [frame.lineno for frame in frames if frame.filename == SCRIPT_FILENAME]
        line = lines[-1] if lines else None
        if isinstance(err, MemoryError):
            text = f"the script ran out of memory: its limit is {memory_mb} MiB"
        else:
            message = str(err).strip()
            text = f"{type(err).__name__}: {message}" if message else type(err).__name__
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 1] + "…"
    return f"{text} (line {line})" if line is not None else text


@dataclass(frozen=True, slots=True)
class AuditGuard:
    """The audit hook of layer 4: refuses what a CAD script has no business doing."""

    # Resolved; the script's process writes there and nowhere else.
    out_dir: str
    # Resolved folders the process may read from besides `out_dir`: Python's own.
    read_roots: tuple[str, ...]

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        """Raise PermissionError if `event` is refused."""
        if event == "open":
            self._check_open(args)
        elif (what := _REFUSED_EVENTS.get(event)) is not None:
            raise PermissionError(f"{what} is not allowed in a CAD script")
        elif (positions := _MUTATIONS.get(event)) is not None:
            self._check_mutation(event, args, *positions)
        else:
            for prefix, what in _REFUSED_PREFIXES.items():
                if event.startswith(prefix):
                    raise PermissionError(f"{what} is not allowed in a CAD script ({event})")

    def _check_open(self, args: tuple[Any, ...]) -> None:
        path, mode, flags = args
        # An already open descriptor was checked when it was opened.
        if isinstance(path, int):
            return
        resolved = _resolve(path, None)
        writes = bool((flags or 0) & _WRITE_FLAGS) or any(c in (mode or "") for c in "wax+")
        if writes and not _within(resolved, (self.out_dir,)):
            raise PermissionError(
                f"writing {resolved} is not allowed; a CAD script writes no files"
            )
        if not writes and not _within(resolved, (self.out_dir, *self.read_roots)):
            raise PermissionError(f"reading {resolved} is not allowed in a CAD script")

    def _check_mutation(
        self,
        event: str,
        args: tuple[Any, ...],
        path_positions: tuple[int, ...],
        dir_fd_positions: Sequence[int],
    ) -> None:
        dir_fds = [args[i] if i < len(args) else None for i in dir_fd_positions]
        for index, position in enumerate(path_positions):
            dir_fd = dir_fds[index] if index < len(dir_fds) else None
            resolved = _resolve(args[position], dir_fd)
            if not _within(resolved, (self.out_dir,)):
                raise PermissionError(f"{event} on {resolved} is not allowed in a CAD script")


def _resolve(path: Any, dir_fd: int | None) -> str:
    """Return where `path` (relative to `dir_fd`, or a descriptor itself) really is."""
    if isinstance(path, int):
        return os.path.realpath(f"/proc/self/fd/{path}")
    text = os.fsdecode(path)
    if dir_fd is not None:
        text = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), text)
    return os.path.realpath(text)


def _within(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _python_roots() -> tuple[str, ...]:
    """Return the folders Python loads modules and data from: they hold no secrets."""
    candidates = [*sys.path, sys.prefix, sys.base_prefix, sys.exec_prefix]
    return tuple(sorted({os.path.realpath(entry) for entry in candidates if entry}))


def _limit_resources(job: SandboxJob) -> None:
    memory = job.memory_mb * MIB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # The soft limit sends SIGXCPU, which the parent reports; the hard one is SIGKILL.
    cpu = math.ceil(job.timeout_s) + STARTUP_CPU_S
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _leave_network() -> None:
    """Move into a network namespace of no interfaces, not even a working loopback."""
    try:
        os.unshare(os.CLONE_NEWNET)
    except OSError:
        # Not root, or namespaces are off: the audit hook still refuses sockets.
        return


def _restricted_import(
    name: str,
    globals_: Mapping[str, object] | None = None,
    locals_: Mapping[str, object] | None = None,
    fromlist: Sequence[str] = (),
    level: int = 0,
) -> ModuleType:
    """Import like `__import__`, letting only the allowed modules in.

    `from cadquery.x import os` would hand the script a module CadQuery imported, so
    imported names that are modules are checked too.
    """
    if (refusal := import_refusal(name, level)) is not None:
        raise ImportError(refusal)
    module = builtins.__import__(name, globals_, locals_, fromlist, level)
    for item in fromlist or ():
        value = getattr(module, item, None)
        if isinstance(value, ModuleType) and (refusal := import_refusal(value.__name__)):
            raise ImportError(refusal)
    return module


def _script_builtins() -> dict[str, object]:
    allowed: dict[str, object] = {
        name: value for name, value in vars(builtins).items() if name not in BLOCKED_NAMES
    }
    allowed["__import__"] = _restricted_import
    return allowed


def _run(job: SandboxJob) -> SandboxReport:
    """Run the script, then check, export and measure its part."""
    from kittyai.cad.geometry import (  # noqa: PLC0415 - loaded by main() before any guard
        GeometryError,
        check_part,
        export_part,
        measure,
    )

    shown: list[object] = []

    def show_object(obj: object, name: str | None = None, options: object = None) -> None:
        """Take `obj` as the result, as CQ-editor does."""
        shown.append(obj)

    namespace: dict[str, object] = {
        "__builtins__": _script_builtins(),
        "__name__": "part",
        "show_object": show_object,
    }
    reserve: bytearray | None = bytearray(MEMORY_RESERVE_BYTES)
    try:
        exec(compile(job.script, SCRIPT_FILENAME, "exec"), namespace)  # noqa: S102
    # Whatever the script raises, SystemExit included, is the script's error to report.
    except BaseException as err:
        reserve = None
        return SandboxReport(ok=False, error=describe_error(err, memory_mb=job.memory_mb))
    del reserve
    if "result" in namespace:
        result = namespace["result"]
    elif shown:
        result = shown[-1]
    else:
        return SandboxReport(
            ok=False,
            error="the script made no part: assign the final solid to a variable named `result`",
        )
    try:
        shape = check_part(result, job.build_volume)
        files = export_part(shape, job.out_dir)
        metrics = measure(shape, job.density_g_cm3)
    except GeometryError as err:
        return SandboxReport(ok=False, error=str(err))
    # The kernel's own exceptions (OCCT's StdFail_NotDone...) are the script's doing.
    except Exception as err:
        return SandboxReport(ok=False, error=describe_error(err, memory_mb=job.memory_mb))
    return SandboxReport(ok=True, files=files, metrics=metrics)


def main() -> None:
    """Read the job, put up the guards, run the script and report."""
    job = SandboxJob.model_validate_json(sys.stdin.buffer.read())
    # The report gets stdout of its own; whatever the script prints goes to stderr.
    report_stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _limit_resources(job)
    _leave_network()
    try:
        import kittyai.cad.geometry  # noqa: F401, PLC0415 - layer 3: loaded unguarded
    except (ImportError, MemoryError) as err:
        # Shared libraries that cannot be mapped fail the import, not the allocator.
        error = (
            f"the CAD kernel could not be loaded within the sandbox's {job.memory_mb} MiB"
            f" memory limit ({type(err).__name__})"
        )
        _send(report_stream, SandboxReport(ok=False, error=error).model_dump_json())
        return
    sys.addaudithook(AuditGuard(os.path.realpath(job.out_dir), _python_roots()))
    _send(report_stream, READY)
    _send(report_stream, _run(job).model_dump_json())


def _send(stream: TextIO, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


if __name__ == "__main__":
    main()
