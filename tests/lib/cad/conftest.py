"""Shared helpers of the CAD service tests: STL files, service processes and their API."""

import asyncio
from dataclasses import dataclass
from pathlib import Path
import struct
import time
from typing import Any

from kittyai.catalog import ServiceName
from kittyai.contract.cad import Artifact, CadJob, JobState
from tests.helpers.net import loopback_sockets
from tests.helpers.services import ServiceApi, ServiceProcess

# Loading the CAD kernel alone takes about 4 s, more on a busy machine.
STARTUP_TIMEOUT_S = 60.0
JOB_TIMEOUT_S = 120.0

# The 12 triangles of a box from the origin: 2 per face, wound outwards.
_BOX_CORNERS = [(x, y, z) for z in (0, 1) for y in (0, 1) for x in (0, 1)]
_BOX_FACES = [
    (0, 2, 3), (0, 3, 1), (4, 5, 7), (4, 7, 6), (0, 1, 5), (0, 5, 4),
    (1, 3, 7), (1, 7, 5), (3, 2, 6), (3, 6, 7), (2, 0, 4), (2, 4, 6),
]  # fmt: skip


def write_box_stl(path: Path, size: tuple[float, float, float]) -> Path:
    """Write a binary STL of a solid box with the given extents and return its path."""
    corners = [tuple(c * s for c, s in zip(corner, size, strict=True)) for corner in _BOX_CORNERS]
    with path.open("wb") as file:
        file.write(b"KITTY test box".ljust(80, b" ") + struct.pack("<I", len(_BOX_FACES)))
        for face in _BOX_FACES:
            vertices = [value for index in face for value in corners[index]]
            file.write(struct.pack("<12fH", 0, 0, 0, *vertices, 0))
    return path


def start_cad_service(
    workdir: Path, *, mqtt_port: int | None = None, **options: Any
) -> ServiceProcess:
    """Start a real `python -m kittyai.cad` process; a module fixture may call this."""
    with loopback_sockets():
        process = ServiceProcess(
            ServiceName.CAD, workdir, mqtt_port=mqtt_port, extra_options=options or None
        )
        process.start(timeout=STARTUP_TIMEOUT_S)
    return process


@dataclass(slots=True)
class CadApi(ServiceApi):
    """Calls one CAD service process as it is."""

    async def submit(self, **request: Any) -> CadJob:
        answer = await self.call("POST", "/api/cad/generate", json_body=request)
        assert answer.status == 202, answer.body
        job = CadJob.model_validate(answer.body)
        assert answer.headers["Location"] == f"/api/cad/jobs/{job.id}"
        return job

    async def job(self, job_id: str) -> CadJob:
        return CadJob.model_validate(await self.get(f"/api/cad/jobs/{job_id}"))

    async def finished(self, job_id: str, timeout: float = JOB_TIMEOUT_S) -> CadJob:  # noqa: ASYNC109
        """Return the job once it is done or failed."""
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if job.state in (JobState.DONE, JobState.FAILED):
                return job
            assert time.monotonic() < deadline, f"job still {job.state} after {timeout} s"
            await asyncio.sleep(0.1)

    async def make(self, **request: Any) -> tuple[CadJob, list[Artifact]]:
        """Submit a request, wait for it, and return the job and its artifacts."""
        job = await self.finished((await self.submit(**request)).id)
        artifacts = [
            await self.artifact(variant.artifact_id)
            for variant in job.variants
            if variant.artifact_id is not None
        ]
        return job, artifacts

    async def artifact(self, artifact_id: str) -> Artifact:
        return Artifact.model_validate(await self.get(f"/api/cad/artifacts/{artifact_id}"))

    async def file(self, artifact_id: str, name: str) -> tuple[str, bytes]:
        """Return the content type and bytes of one artifact file."""
        url = f"{self.process.url}/api/cad/artifacts/{artifact_id}/files/{name}"
        headers = {"Authorization": f"Bearer {self.process.token}"}
        async with self.session.get(url, headers=headers) as response:
            assert response.status == 200, await response.text()
            return response.content_type, await response.read()
