"""The CadQuery sandbox: real runner processes, real CadQuery, real limits."""

import asyncio
import math
import os
from pathlib import Path
import socket
import time

import pytest

from kittyai.cad.geometry import TIMES
from kittyai.cad.mesh import stl_watertight
from kittyai.cad.options import SandboxOptions
from kittyai.cad.sandbox import ScriptRun, check_script, run_script, run_unchecked
from kittyai.contract.cad import FileKind
from tests.lib.waiting import wait_until

PRUSA_MK4 = (250.0, 210.0, 220.0)
PLA = 1.24
OPTIONS = SandboxOptions(timeout_s=30)

BOX_WITH_HOLE = """\
import cadquery as cq

result = cq.Workplane("XY").box(40, 30, 10).faces(">Z").workplane().hole(8)
"""


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "variant-0"
    folder.mkdir()
    return folder


async def sandboxed(
    script: str, out_dir: Path, options: SandboxOptions = OPTIONS, *, checked: bool = True
) -> ScriptRun:
    runner = run_script if checked else run_unchecked
    return await runner(script, out_dir, build_volume=PRUSA_MK4, density_g_cm3=PLA, options=options)


def runner_pids(out_dir: Path) -> set[int]:
    """Return the processes working in `out_dir`: the runner runs there."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == str(out_dir.resolve()):
                    pids.add(int(entry.name))
            except OSError:
                continue
    return pids


def process_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def names_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def assert_failed_cleanly(run: ScriptRun, out_dir: Path) -> None:
    assert not run.ok
    assert run.files == {}
    assert run.metrics is None
    assert names_in(out_dir) == []


async def test_box_with_hole_is_exported_and_measured(out_dir: Path) -> None:
    assert check_script(BOX_WITH_HOLE) is None

    run = await run_script(
        BOX_WITH_HOLE, out_dir, build_volume=PRUSA_MK4, density_g_cm3=PLA, options=OPTIONS
    )

    assert run.ok, run.error
    assert run.error is None
    assert not run.killed
    assert set(run.files) == {FileKind.STEP, FileKind.STL, FileKind.THREE_MF}
    # Only the part's files stay: the kernel's caches in HOME are gone.
    assert names_in(out_dir) == ["part.3mf", "part.step", "part.stl"]
    assert run.files[FileKind.STEP].read_text().startswith("ISO-10303-21;")
    assert run.files[FileKind.THREE_MF].read_bytes()[:2] == b"PK"
    assert stl_watertight(run.files[FileKind.STL])
    expected_volume = 40 * 30 * 10 - math.pi * 4**2 * 10
    assert run.metrics is not None
    assert run.metrics.volume_mm3 == pytest.approx(expected_volume, rel=1e-4)
    assert run.metrics.bbox_mm == pytest.approx((40, 30, 10))
    assert run.metrics.mass_g == pytest.approx(expected_volume / 1000 * PLA, rel=1e-4)
    assert run.metrics.solids == 1


async def test_show_object_gives_the_result_as_in_cq_editor(out_dir: Path) -> None:
    script = "import cadquery as cq\nshow_object(cq.Workplane().sphere(10))\n"

    run = await sandboxed(script, out_dir)

    assert run.ok, run.error
    assert run.metrics is not None
    assert run.metrics.volume_mm3 == pytest.approx(4 / 3 * math.pi * 10**3, rel=1e-3)


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (
            'import cadquery as cq\n\nraise ValueError("boom")\n',
            "ValueError: boom (line 3)",
        ),
        (
            "import cadquery as cq\n"
            "box = cq.Workplane().box(10, 10, 10)\n"
            'result = box.edges("|Z").fillet(50)\n',
            "StdFail_NotDone: BRep_API: command not done (line 3)",
        ),
    ],
    ids=["raise", "kernel-error"],
)
async def test_script_error_names_type_message_and_line(
    out_dir: Path, script: str, error: str
) -> None:
    run = await sandboxed(script, out_dir)

    assert run.error == error
    assert not run.killed
    assert_failed_cleanly(run, out_dir)


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (
            "import os\n",
            "import of 'os' is not allowed; only cadquery and math may be imported (line 1)",
        ),
        (
            "import cadquery as cq\nfrom subprocess import run\n",
            "import of 'subprocess' is not allowed; only cadquery and math may be imported"
            " (line 2)",
        ),
        (
            "from . import helpers\n",
            "relative imports are not allowed; only cadquery and math may be imported (line 1)",
        ),
        (
            'sock = __import__("socket")\n',
            "the name '__import__' is not allowed in a CAD script (line 1)",
        ),
        ('result = eval("1")\n', "the name 'eval' is not allowed in a CAD script (line 1)"),
        (
            "import cadquery as cq\nbox = cq.Workplane()\nroots = box.__class__.__mro__\n",
            "the attribute '__mro__' is not allowed in a CAD script (line 3)",
        ),
        (
            'import math\nresult = getattr(math, "pi")\n',
            "the name 'getattr' is not allowed in a CAD script (line 2)",
        ),
        ("result = (\n", "SyntaxError: '(' was never closed (line 1)"),
    ],
    ids=[
        "os",
        "from-subprocess",
        "relative",
        "dunder-import",
        "eval",
        "dunder-attr",
        "getattr",
        "syntax",
    ],
)
async def test_static_check_refuses_without_starting_a_process(
    out_dir: Path, script: str, error: str
) -> None:
    started = time.monotonic()

    run = await sandboxed(script, out_dir)

    # Loading CadQuery alone takes seconds: a refusal this quick started no process.
    assert time.monotonic() - started < 0.5
    assert run.error == error
    assert runner_pids(out_dir) == set()
    assert_failed_cleanly(run, out_dir)


async def test_network_through_a_cadquery_module_is_refused_at_run_time(
    out_dir: Path,
) -> None:
    # No import statement and no dunder: the static check lets it through, and
    # CadQuery's exporters module hands out `os`, hence `sys.modules` and importlib.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        script = (
            "import cadquery as cq\n"
            "modules = cq.occ_impl.exporters.os.sys.modules\n"
            'net = modules["importlib"].import_module("socket")\n'
            f'net.create_connection(("127.0.0.1", {port}), timeout=2)\n'
        )
        assert check_script(script) is None

        run = await sandboxed(script, out_dir)

        assert run.error is not None
        assert run.error.startswith("PermissionError: network access is not allowed")
        assert run.error.endswith("(line 4)")
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert_failed_cleanly(run, out_dir)


@pytest.mark.parametrize(
    ("attempt", "error"),
    [
        ("os.system('touch {marker}')", "PermissionError: starting a process is not allowed"),
        (
            "os.sys.modules['pathlib'].Path('{marker}').write_text('x')",
            "PermissionError: writing {marker} is not allowed; a CAD script writes no files",
        ),
        (
            "os.sys.modules['resource'].setrlimit(os.sys.modules['resource'].RLIMIT_AS, (-1, -1))",
            "PermissionError: changing resource limits is not allowed",
        ),
        (
            "os.sys.modules['ctypes'].CDLL('libc.so.6')",
            "PermissionError: calling foreign code is not allowed",
        ),
    ],
    ids=["process", "write", "rlimit", "ctypes"],
)
async def test_escapes_through_cadquery_os_are_refused_at_run_time(
    tmp_path: Path, out_dir: Path, attempt: str, error: str
) -> None:
    marker = tmp_path / "escaped"
    script = "import cadquery as cq\nos = cq.occ_impl.exporters.os\n" + attempt.format(
        marker=marker
    )
    assert check_script(script) is None

    run = await sandboxed(script, out_dir)

    assert run.error is not None
    assert run.error.startswith(error.format(marker=marker))
    assert run.error.endswith("(line 3)")
    assert not marker.exists()
    assert_failed_cleanly(run, out_dir)


async def test_reading_files_outside_python_is_refused(tmp_path: Path, out_dir: Path) -> None:
    secret = tmp_path / "options.json"
    secret.write_text('{"token": "hunter2"}')
    script = (
        "import cadquery as cq\n"
        "os = cq.occ_impl.exporters.os\n"
        f"raise ValueError(os.sys.modules['pathlib'].Path({str(secret)!r}).read_text())\n"
    )
    assert check_script(script) is None

    run = await sandboxed(script, out_dir)

    assert run.error == f"PermissionError: reading {secret} is not allowed in a CAD script (line 3)"
    assert_failed_cleanly(run, out_dir)


@pytest.mark.parametrize(
    "script",
    ["import socket\n", "from cadquery.occ_impl.exporters import os\n"],
    ids=["socket", "os-from-cadquery"],
)
async def test_runner_refuses_imports_the_static_check_would(out_dir: Path, script: str) -> None:
    # Straight to the runner: its import guard holds without the parent's check.
    name = "socket" if "socket" in script else "os"

    run = await sandboxed(script, out_dir, checked=False)

    assert run.error == (
        f"ImportError: import of {name!r} is not allowed; only cadquery and math may be"
        " imported (line 1)"
    )
    assert_failed_cleanly(run, out_dir)


async def test_infinite_loop_is_killed_after_the_timeout(out_dir: Path) -> None:
    options = SandboxOptions(timeout_s=3)
    task = asyncio.create_task(sandboxed("while True:\n    pass\n", out_dir, options))
    await wait_until(lambda: runner_pids(out_dir), timeout=60)
    pids = runner_pids(out_dir)

    run = await task

    assert run.killed
    assert run.error == "the script ran longer than 3 s and was stopped"
    assert runner_pids(out_dir) == set()
    assert not any(map(process_exists, pids))
    assert_failed_cleanly(run, out_dir)


async def test_cancelled_run_leaves_no_process_and_no_files(out_dir: Path) -> None:
    task = asyncio.create_task(sandboxed("while True:\n    pass\n", out_dir))
    await wait_until(lambda: runner_pids(out_dir), timeout=60)
    pids = runner_pids(out_dir)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert not any(map(process_exists, pids))
    assert names_in(out_dir) == []


async def test_memory_bomb_is_reported_as_out_of_memory(out_dir: Path) -> None:
    run = await sandboxed("import math\nblob = bytearray(10**10)\n", out_dir)

    assert run.error == "the script ran out of memory: its limit is 2048 MiB (line 2)"
    assert not run.killed
    assert_failed_cleanly(run, out_dir)


async def test_crash_is_reported_with_its_signal(out_dir: Path) -> None:
    # faulthandler's self-test crashes its process, as a kernel bug would.
    script = (
        "import cadquery as cq\n"
        "modules = cq.occ_impl.exporters.os.sys.modules\n"
        'modules["importlib"].import_module("faulthandler")._sigsegv()\n'
    )

    run = await sandboxed(script, out_dir)

    assert run.error == "the script's process died from SIGSEGV"
    assert not run.killed
    assert_failed_cleanly(run, out_dir)


async def test_too_little_memory_for_the_kernel_is_reported(out_dir: Path) -> None:
    # Loading CadQuery and OCCT maps about 1.2 GiB of address space.
    run = await sandboxed(BOX_WITH_HOLE, out_dir, SandboxOptions(memory_mb=1024))

    # Where the limit bites depends on what the library's imports allocate first: a
    # shared library that cannot be mapped (ImportError) or a Python allocation.
    assert run.error in {
        f"the CAD kernel could not be loaded within the sandbox's 1024 MiB memory limit ({error})"
        for error in ("ImportError", "MemoryError")
    }
    assert_failed_cleanly(run, out_dir)


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (
            "import cadquery as cq\n"
            "result = cq.Workplane().box(10, 10, 10).union(\n"
            "    cq.Workplane().box(10, 10, 10).translate((30, 0, 0)))\n",
            "the result has 2 separate solids; the part must be one solid",
        ),
        (
            "import cadquery as cq\nresult = cq.Workplane().box(300, 10, 10)\n",
            f"the part is 300.0{TIMES}10.0{TIMES}10.0 mm;"
            f" the printer builds at most 250{TIMES}210{TIMES}220 mm",
        ),
        (
            "import cadquery as cq\npart = cq.Workplane().box(10, 10, 10)\n",
            "the script made no part: assign the final solid to a variable named `result`",
        ),
    ],
    ids=["two-solids", "too-large", "no-result"],
)
async def test_unprintable_results_are_refused(out_dir: Path, script: str, error: str) -> None:
    run = await sandboxed(script, out_dir)

    assert run.error is not None
    assert run.error.startswith(error)
    assert_failed_cleanly(run, out_dir)
