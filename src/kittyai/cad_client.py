"""Async client for the CAD service's HTTP API: make parts, follow jobs, fetch artifacts.

Home Assistant uses it with its shared aiohttp session. It needs no CAD kernel: it
speaks the API's bodies (`kittyai.contract.cad`) and nothing else. No message of
its errors contains the token.
"""

import asyncio
from http import HTTPStatus
import time

import aiohttp
from pydantic import BaseModel
from yarl import URL

from kittyai.client import (
    KittyClient,
    KittyConnectionError,
    KittyError,
    KittyRequestError,
    path_segment,
)
from kittyai.contract.cad import (
    Artifact,
    CadJob,
    GenerateRequest,
    JobState,
    Lineage,
    PartFamilyInfo,
    PrinterProfileInfo,
)

# How often `wait` asks for a job: a part takes seconds, a cloud part minutes.
POLL_INTERVAL = 0.5
FINISHED_STATES = frozenset({JobState.DONE, JobState.FAILED})


class CadRequestError(KittyRequestError):
    """The CAD service refused a request (HTTP 4xx), saying why."""


class CadJobTimeoutError(KittyError):
    """A CAD job did not finish in time; it may still finish on the service."""

    def __init__(self, job: CadJob, timeout: float) -> None:
        """Keep the job as last seen."""
        super().__init__(f"CAD job {job.id} is still {job.state} after {timeout:g} s")
        self.job = job


class _ArtifactList(BaseModel):
    artifacts: list[Artifact]


class _FamilyList(BaseModel):
    families: list[PartFamilyInfo]


class _PrinterList(BaseModel):
    printers: list[PrinterProfileInfo]


class CadClient(KittyClient):
    """Talks to one CAD service over HTTP with a bearer token.

    It is a KittyClient, so `get_info` tells who the service is; what it adds are
    the CAD routes, and a `CadRequestError` for every request the service refuses.
    """

    refusal_error = CadRequestError

    async def generate(self, request: GenerateRequest) -> CadJob:
        """Submit a request; return the queued job."""
        body = await self._request_json(
            "POST",
            "/api/cad/generate",
            json_body=request.model_dump(mode="json", exclude_none=True),
            expected=HTTPStatus.ACCEPTED,
        )
        return self._parse(CadJob, body, "a job")

    async def job(self, job_id: str) -> CadJob:
        """Return a job as it is now."""
        body = await self._request_json("GET", f"/api/cad/jobs/{path_segment(job_id)}")
        return self._parse(CadJob, body, "a job")

    # The error of a timeout carries the job as last seen, which asyncio.timeout cannot.
    async def wait(self, job_id: str, timeout: float) -> CadJob:  # noqa: ASYNC109
        """Return the job once it is done or failed; raise CadJobTimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while (job := await self.job(job_id)).state not in FINISHED_STATES:
            if time.monotonic() >= deadline:
                raise CadJobTimeoutError(job, timeout)
            await asyncio.sleep(POLL_INTERVAL)
        return job

    async def artifact(self, artifact_id: str) -> Artifact:
        """Return one artifact."""
        body = await self._request_json("GET", f"/api/cad/artifacts/{path_segment(artifact_id)}")
        return self._parse(Artifact, body, "an artifact")

    async def artifacts(
        self, limit: int | None = None, conversation_id: str | None = None
    ) -> list[Artifact]:
        """Return the newest artifacts first, of one conversation if given."""
        query: dict[str, str | int] = {}
        if limit is not None:
            query["limit"] = limit
        if conversation_id is not None:
            query["conversation_id"] = conversation_id
        path = str(URL("/api/cad/artifacts").with_query(query))
        body = await self._request_json("GET", path)
        return self._parse(_ArtifactList, body, "an artifact list").artifacts

    async def file(self, artifact_id: str, name: str) -> bytes:
        """Return the bytes of one file of an artifact, e.g. `preview.png`."""
        path = f"/api/cad/artifacts/{path_segment(artifact_id)}/files/{path_segment(name)}"
        try:
            async with self._session.get(
                self._url.join(URL(path)), headers=self._headers, timeout=self._timeout
            ) as response:
                await self._raise_for_status(response, path, HTTPStatus.OK)
                return await response.read()
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as err:
            raise KittyConnectionError(f"Cannot reach {self._url}") from err

    async def lineage(self, artifact_id: str) -> Lineage:
        """Return an artifact with its ancestors and children."""
        path = f"/api/cad/artifacts/{path_segment(artifact_id)}/lineage"
        return self._parse(Lineage, await self._request_json("GET", path), "a lineage")

    async def families(self) -> list[PartFamilyInfo]:
        """Return the part families of the service's library."""
        body = await self._request_json("GET", "/api/cad/families")
        return self._parse(_FamilyList, body, "a family list").families

    async def printers(self) -> list[PrinterProfileInfo]:
        """Return the printer profiles parts are made for."""
        body = await self._request_json("GET", "/api/cad/printers")
        return self._parse(_PrinterList, body, "a printer list").printers
