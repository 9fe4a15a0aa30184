"""Run a CadQuery script a model wrote, in a sandboxed process of its own.

A script is checked statically first (`check_script`): only cadquery and math may be
imported, and the names that lead out of a Python sandbox are refused. What passes
runs in `kittyai.cad.sandbox_runner`, a fresh process with resource limits, no
network, an audit hook and restricted builtins, in a new session so the whole process
group can be killed when the wall-clock time is up. The child gets a minimal
environment: the service's secrets live in its environment and options, never there.
"""

import ast
import asyncio
import contextlib
from dataclasses import dataclass
import logging
import os
from pathlib import Path
import shutil
import signal
import sys

from pydantic import ValidationError

from kittyai.cad.options import SandboxOptions
from kittyai.cad.sandbox_runner import (
    BLOCKED_NAMES,
    READY,
    SCRIPT_FILENAME,
    SandboxJob,
    SandboxReport,
    import_refusal,
)
from kittyai.contract.cad import FileKind, PartMetrics

_LOGGER = logging.getLogger(__name__)

RUNNER_MODULE = "kittyai.cad.sandbox_runner"
# Loading the CAD kernel takes about 4 s, far more on a busy machine; the script's
# own time limit starts once the runner is ready.
STARTUP_TIMEOUT_S = 120.0
# Longest report line read from the runner; a report is a few hundred bytes.
MAX_REPORT_BYTES = 1024 * 1024
# How much of the runner's stderr (its tracebacks, the script's prints) is kept for the log.
STDERR_TAIL_BYTES = 4096


@dataclass(frozen=True, slots=True)
class ScriptRun:
    """How running a script went."""

    ok: bool
    # What went wrong, short, for the model and the user.
    error: str | None
    files: dict[FileKind, Path]
    metrics: PartMetrics | None
    # Whether the script's process was killed for running too long.
    killed: bool

    @classmethod
    def failed(cls, error: str, *, killed: bool = False) -> ScriptRun:
        """Return a run that failed with `error`."""
        return cls(ok=False, error=error, files={}, metrics=None, killed=killed)


def check_script(script: str) -> str | None:
    """Return why `script` may not run at all, or None if it may.

    Refuses syntax errors, imports other than cadquery and math, and the builtins and
    attributes that reach Python's internals (`eval`, `getattr`, `x.__class__`...).
    """
    try:
        tree = ast.parse(script, filename=SCRIPT_FILENAME)
    except SyntaxError as err:
        return f"SyntaxError: {err.msg} (line {err.lineno})"
    for node in ast.walk(tree):
        # Imports and global declarations are statements; names and attributes expressions.
        if isinstance(node, ast.stmt | ast.expr) and (refusal := _node_refusal(node)):
            return f"{refusal} (line {node.lineno})"
    return None


def _node_refusal(node: ast.stmt | ast.expr) -> str | None:
    match node:
        case ast.Import(names=aliases):
            return next(
                (refusal for alias in aliases if (refusal := import_refusal(alias.name))), None
            )
        case ast.ImportFrom(module=module, level=level):
            return import_refusal(module or "", level)
        case ast.Name(id=name) if _escapes(name):
            return f"the name {name!r} is not allowed in a CAD script"
        case ast.Attribute(attr=name) if _escapes(name):
            return f"the attribute {name!r} is not allowed in a CAD script"
        case ast.Global(names=names) | ast.Nonlocal(names=names) if any(map(_escapes, names)):
            return "declaring a builtin or dunder name global is not allowed in a CAD script"
    return None


def _escapes(name: str) -> bool:
    """Return whether `name` leads out of the sandbox: a blocked builtin or any dunder."""
    return name in BLOCKED_NAMES or (name.startswith("__") and name.endswith("__"))


async def run_script(
    script: str,
    out_dir: Path,
    *,
    build_volume: tuple[float, float, float],
    density_g_cm3: float,
    options: SandboxOptions,
) -> ScriptRun:
    """Run `script` in the sandbox and return its part's files and metrics.

    Args:
        script: CadQuery Python that assigns the part to `result`.
        out_dir: An existing folder; the part's STEP, STL and 3MF are written there.
        build_volume: The printer's build volume along x, y and z, in mm.
        density_g_cm3: The material's density, for the part's mass.
        options: The sandbox's time and memory limits.

    Returns:
        The run; when it failed, nothing it wrote is left in `out_dir`.
    """
    if (refusal := check_script(script)) is not None:
        return ScriptRun.failed(refusal)
    return await run_unchecked(
        script,
        out_dir,
        build_volume=build_volume,
        density_g_cm3=density_g_cm3,
        options=options,
    )


async def run_unchecked(
    script: str,
    out_dir: Path,
    *,
    build_volume: tuple[float, float, float],
    density_g_cm3: float,
    options: SandboxOptions,
) -> ScriptRun:
    """Run `script` in the sandbox without the static check: the runtime layers alone.

    `run_script` is what callers want; this is the sandbox process on its own, for a
    script the static check has already passed, or to prove the runtime layers hold
    where the static check would have refused.
    """
    out_dir, before = await asyncio.to_thread(_snapshot, out_dir)
    job = SandboxJob(
        script=script,
        out_dir=out_dir,
        build_volume=build_volume,
        density_g_cm3=density_g_cm3,
        timeout_s=options.timeout_s,
        memory_mb=options.memory_mb,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-m",
        RUNNER_MODULE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=out_dir,
        env=_environment(out_dir),
        start_new_session=True,
        limit=MAX_REPORT_BYTES,
    )
    assert process.stderr is not None  # noqa: S101 - asked for as a pipe
    stderr_tail = asyncio.create_task(_tail(process.stderr))
    run = None
    try:
        run = await _supervise(process, job, options)
    finally:
        # Cancelled too: no runner outlives its run, no stray file its folder.
        await _kill(process)
        stderr = await stderr_tail
        kept = set(run.files.values()) if run is not None else set()
        await asyncio.to_thread(_remove_new_entries, out_dir, before, kept)
    if not run.ok:
        _LOGGER.debug("CAD script failed: %s; runner's stderr ends: %s", run.error, stderr)
    return run


def _snapshot(out_dir: Path) -> tuple[Path, set[Path]]:
    """Return `out_dir` resolved and what it holds before a run."""
    resolved = out_dir.resolve(strict=True)
    return resolved, set(resolved.iterdir())


def _environment(out_dir: Path) -> dict[str, str]:
    """Return the runner's whole environment: nothing of the service's own."""
    folder = str(out_dir)
    return {
        "PATH": os.defpath,
        # Caches (ezdxf's font list) and temporary files land in the part's folder,
        # the only one the runner may write to, and are removed after the run.
        "HOME": folder,
        "TMPDIR": folder,
        "LANG": "C.UTF-8",
        # One thread per numeric library: threads multiply the address space used.
        "OMP_NUM_THREADS": "1",
    }


async def _supervise(
    process: asyncio.subprocess.Process, job: SandboxJob, options: SandboxOptions
) -> ScriptRun:
    """Hand the job over, wait for the runner to be ready, then for its report."""
    stdin, stdout = process.stdin, process.stdout
    assert stdin is not None  # noqa: S101 - asked for as a pipe
    assert stdout is not None  # noqa: S101 - asked for as a pipe
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            stdin.write(job.model_dump_json().encode())
            await stdin.drain()
            stdin.close()
            first = await stdout.readline()
    except TimeoutError:
        return ScriptRun.failed(
            f"the CAD kernel did not start within {STARTUP_TIMEOUT_S:g} s", killed=True
        )
    except BrokenPipeError, ConnectionResetError, ValueError:
        first = b""
    # The runner reports straight away when it cannot even load the kernel.
    report = first
    if first.strip() == READY.encode():
        try:
            async with asyncio.timeout(options.timeout_s):
                report = await stdout.readline()
        except TimeoutError:
            return ScriptRun.failed(
                f"the script ran longer than {options.timeout_s:g} s and was stopped",
                killed=True,
            )
        except ValueError:
            return ScriptRun.failed("the sandbox's report was too long to read")
    if not report:
        return await _ended_without_report(process, options)
    return _read_report(report, job.out_dir)


async def _ended_without_report(
    process: asyncio.subprocess.Process, options: SandboxOptions
) -> ScriptRun:
    """Return why the runner ended before it reported, from how its process ended."""
    try:
        async with asyncio.timeout(options.timeout_s):
            code = await process.wait()
    except TimeoutError:
        return ScriptRun.failed("the sandbox stopped answering and was stopped", killed=True)
    if code == -signal.SIGXCPU:
        return ScriptRun.failed("the script used up its CPU time and was stopped")
    if code == -signal.SIGKILL:
        return ScriptRun.failed(
            "the script's process was killed, most likely for using more than"
            f" {options.memory_mb} MiB of memory"
        )
    if code < 0:
        return ScriptRun.failed(f"the script's process died from {signal.Signals(-code).name}")
    return ScriptRun.failed(f"the sandbox ended without a report (exit code {code})")


def _read_report(line: bytes, out_dir: Path) -> ScriptRun:
    """Return the run the runner reported, trusting none of its paths outside `out_dir`."""
    try:
        report = SandboxReport.model_validate_json(line)
    except ValidationError:
        return ScriptRun.failed("the sandbox's report could not be read")
    if not report.ok:
        return ScriptRun.failed(report.error or "the script failed")
    strays = [path for path in report.files.values() if not _is_file_in(path, out_dir)]
    if strays or FileKind.STL not in report.files or report.metrics is None:
        return ScriptRun.failed("the sandbox reported a part without its files")
    return ScriptRun(ok=True, error=None, files=report.files, metrics=report.metrics, killed=False)


def _is_file_in(path: Path, folder: Path) -> bool:
    return path.parent == folder and path.is_file() and not path.is_symlink()


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill the runner's whole process group, unless it ended by itself, and reap it."""
    if process.returncode is None:
        # Until the runner is reaped its group exists, even if it has just exited.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


async def _tail(stream: asyncio.StreamReader) -> str:
    """Read `stream` to its end; return its last bytes."""
    kept = b""
    while chunk := await stream.read(STDERR_TAIL_BYTES):
        kept = (kept + chunk)[-STDERR_TAIL_BYTES:]
    return kept.decode(errors="replace")


def _remove_new_entries(out_dir: Path, before: set[Path], keep: set[Path]) -> None:
    """Remove what the run added to `out_dir`, apart from the part's files in `keep`."""
    for entry in set(out_dir.iterdir()) - before - keep:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
