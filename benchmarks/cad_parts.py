"""What the CAD service adds to building a part, and to slicing it, over doing it directly.

For a few part families, in one run on the same machine:

- service cold: a fresh `python -m kittyai.cad` process (info logs, no broker, no model),
  its first part: from `POST /api/cad/generate` until the job is done, slice off, so
  STEP + STL + 3MF + preview (the kernel is loaded at startup, its first build is here);
- service warm: the median of the next N parts of that family, slice off;
- direct: the same parts built in this process with the same code (family build, check,
  export, measure, preview), the kernel already loaded: the median of N;
- slicing: the median of N parts with slice on, minus the warm median with slice off,
  against `prusa-slicer` run directly on the same STL with the same profiles.

Each part differs a little from the one before (its height grows 0.1 mm), as requests
do; nothing is cached anywhere. The job is polled every 10 ms.

    python benchmarks/cad_parts.py [--parts 10]
"""

import argparse
import asyncio
from collections.abc import Iterator
import contextlib
import os
from pathlib import Path
import shutil
import statistics
import subprocess
import tempfile
import time
from typing import Any

import aiohttp

from kittyai.cad.families import FAMILIES
from kittyai.cad.geometry import check_part, export_part, measure
from kittyai.cad.options import DEFAULT_PRINTERS, MATERIAL_DENSITY
from kittyai.cad.preview import render_preview
from kittyai.cad.slicer import material_ini, printer_ini
from kittyai.catalog import ServiceName
from kittyai.contract.cad import FileKind, Material
from tests.helpers.services import ServiceProcess

TOKEN = "benchmark-token-0123456789"  # noqa: S105
PRINTER = DEFAULT_PRINTERS[0]
MATERIAL = Material.PLA
POLL_S = 0.01
# The parts: a plain block, a two-solid enclosure, a knob with 12 fused ridges.
PARTS: dict[str, dict[str, Any]] = {
    "box": {"length": 40, "width": 30, "height": 10, "hole_diameter": 8},
    "enclosure": {"length": 80, "width": 60, "height": 30},
    "knob": {"diameter": 30, "height": 15, "grip_ridges": 12},
}


@contextlib.contextmanager
def cad_process(workdir: Path) -> Iterator[str]:
    """Run a fresh CAD service process in `workdir`; yield its URL."""
    service = ServiceProcess(
        ServiceName.CAD, workdir, mqtt_port=None, token=TOKEN, extra_options={"log_level": "info"}
    )
    service.start(timeout=120)
    try:
        yield service.url
    finally:
        service.stop()


def parameters(family: str, index: int) -> dict[str, Any]:
    base = PARTS[family]
    return {**base, "height": base["height"] + index / 10}


async def through_service(
    session: aiohttp.ClientSession, url: str, family: str, index: int, *, slice_: bool
) -> tuple[float, dict[str, Any]]:
    """Return the seconds from request to done, and the artifact."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"family": family, "parameters": parameters(family, index), "slice": slice_}
    started = time.perf_counter()
    async with session.post(f"{url}/api/cad/generate", json=body, headers=headers) as response:
        job = await response.json()
    assert response.status == 202, job
    while job["state"] not in ("done", "failed"):
        await asyncio.sleep(POLL_S)
        async with session.get(f"{url}/api/cad/jobs/{job['id']}", headers=headers) as response:
            job = await response.json()
    elapsed = time.perf_counter() - started
    assert job["state"] == "done", job
    artifact_id = job["variants"][0]["artifact_id"]
    async with session.get(f"{url}/api/cad/artifacts/{artifact_id}", headers=headers) as response:
        artifact = await response.json()
    return elapsed, artifact


def directly(family: str, index: int, out_dir: Path) -> float:
    """Return the seconds to build, check, export, measure and draw the part in-process."""
    part = FAMILIES[family]
    out_dir.mkdir()
    started = time.perf_counter()
    params = part.parameters.model_validate(parameters(family, index))
    shape = check_part(part.build(params), PRINTER.build_volume, max_solids=part.max_solids)
    files = export_part(shape, out_dir)
    measure(shape, MATERIAL_DENSITY[MATERIAL])
    render_preview(files[FileKind.STL], out_dir / "preview.png")
    return time.perf_counter() - started


def slice_directly(stl: Path, gcode: Path) -> float:
    slicer = shutil.which("prusa-slicer")
    assert slicer is not None, "PrusaSlicer is not installed"
    started = time.perf_counter()
    subprocess.run(
        [
            slicer,
            "--loglevel",
            "1",
            "--export-gcode",
            "--load",
            str(printer_ini(PRINTER)),
            "--load",
            str(material_ini(MATERIAL)),
            "--output",
            str(gcode),
            str(stl),
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


async def measure_family(family: str, parts: int, workdir: Path) -> dict[str, float]:
    with cad_process(workdir / family) as url:
        async with aiohttp.ClientSession() as session:
            cold, _ = await through_service(session, url, family, 0, slice_=False)
            warm: list[float] = []
            sliced: list[float] = []
            slicer_direct: list[float] = []
            direct: list[float] = []
            for index in range(1, parts + 1):
                # Interleaved, so all four see the same machine noise.
                seconds, _ = await through_service(session, url, family, index, slice_=False)
                warm.append(seconds)
                seconds, artifact = await through_service(session, url, family, index, slice_=True)
                sliced.append(seconds)
                direct.append(directly(family, index, workdir / f"{family}-{index}"))
                stl = workdir / f"{family}-{index}" / "part.stl"
                slicer_direct.append(slice_directly(stl, stl.with_suffix(".gcode")))
                assert artifact["slice"] is not None, artifact
    return {
        "cold": cold,
        "warm": statistics.median(warm),
        "direct": statistics.median(direct),
        "slice_service": statistics.median(sliced) - statistics.median(warm),
        "slice_direct": statistics.median(slicer_direct),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=10)
    args = parser.parse_args()
    print(f"CAD parts benchmark, {os.cpu_count()} CPUs, {args.parts} warm parts per family")
    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        # The kernel's first build in this process is not what `direct` measures.
        directly("box", 0, Path(workdir) / "warm-up")
        for family in PARTS:
            rows[family] = asyncio.run(measure_family(family, args.parts, Path(workdir)))
    print(
        f"\n{'family':<10} {'cold':>8} {'warm':>8} {'direct':>8} {'warm/dir':>9}"
        f" {'slice svc':>10} {'slice cli':>10} {'svc/cli':>8}"
    )
    for family, row in rows.items():
        print(
            f"{family:<10} {row['cold'] * 1000:6.0f}ms {row['warm'] * 1000:6.0f}ms"
            f" {row['direct'] * 1000:6.0f}ms {row['warm'] / row['direct']:9.2f}"
            f" {row['slice_service'] * 1000:8.0f}ms {row['slice_direct'] * 1000:8.0f}ms"
            f" {row['slice_service'] / row['slice_direct']:8.2f}"
        )
    print(
        "\ncold/warm: a fresh process's first part against later ones; warm/dir: the"
        " service (HTTP, job, SQLite, hashing, polling) against the same work in-process;"
        " svc/cli: slicing through the service against prusa-slicer on the same STL."
    )


if __name__ == "__main__":
    main()
