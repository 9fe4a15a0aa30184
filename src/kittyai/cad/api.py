"""The CAD service's HTTP API (jobs, artifacts with their files and lineage), and its wiring.

`POST /api/cad/generate` answers 202 with the queued job at once; the job is followed
with `GET /api/cad/jobs/{id}` or on MQTT (`kitty/cad/job`). Artifacts never change, so
their files are served as stored, and only the names an artifact lists are served.
"""

import asyncio
from dataclasses import dataclass
from http import HTTPStatus
import logging
from pathlib import Path

from aiohttp import hdrs, web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kittyai.cad.families import family_info
from kittyai.cad.jobs import CadJobs
from kittyai.cad.options import CadOptions
from kittyai.cad.providers.base import CadProvider
from kittyai.cad.providers.cadquery import CadQueryProvider
from kittyai.cad.providers.parametric import ParametricProvider
from kittyai.cad.providers.tripo import TripoProvider
from kittyai.cad.providers.zoo import ZooProvider
from kittyai.cad.slicer import Slicer
from kittyai.cad.store import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, CadStore
from kittyai.chat_model import ChatModel
from kittyai.contract.cad import (
    Artifact,
    FileKind,
    GenerateRequest,
    Lineage,
    PrinterProfileInfo,
    ProviderName,
)
from kittyai.http_server import ApiError, read_model
from kittyai.service import ServiceRuntime
from kittyai.validation import describe_errors

_LOGGER = logging.getLogger(__name__)

STORE_FILE = "cad.sqlite3"
ARTIFACTS_DIR = "artifacts"

CONTENT_TYPES = {
    FileKind.STEP: "model/step",
    FileKind.STL: "model/stl",
    FileKind.THREE_MF: "model/3mf",
    FileKind.PREVIEW: "image/png",
    FileKind.GCODE: "text/x.gcode",
    FileKind.SCRIPT: "text/x-python",
}


async def serve(runtime: ServiceRuntime[CadOptions]) -> None:
    """Open the store, resume unfinished jobs, start the job worker and add the routes."""
    options = runtime.options
    store = await CadStore.open(runtime.data_dir / STORE_FILE)
    runtime.on_stop(store.close)
    artifacts_dir = (
        Path(options.artifacts_dir) if options.artifacts_dir else runtime.data_dir / ARTIFACTS_DIR
    )
    await asyncio.to_thread(artifacts_dir.mkdir, parents=True, exist_ok=True)
    model = ChatModel(runtime.session, options.model)
    providers: dict[ProviderName, CadProvider] = {
        provider.name: provider
        for provider in (
            ParametricProvider(model),
            CadQueryProvider(model, options.sandbox),
            ZooProvider(runtime.session, options.cloud),
            TripoProvider(runtime.session, options.cloud),
        )
    }
    slicer = Slicer(options.slicer_command)
    jobs = CadJobs(
        options=options,
        store=store,
        providers=providers,
        slicer=slicer,
        mqtt=runtime.mqtt,
        artifacts_dir=artifacts_dir,
    )
    await jobs.resume()
    CadApi(options=options, store=store, jobs=jobs).add_routes(runtime.app)
    runtime.create_background_task(jobs.run_forever(), "jobs")
    # A cloud's check may take a network round trip: serving must not wait for it.
    runtime.create_background_task(_log_availability(providers, slicer), "availability")


async def _log_availability(providers: dict[ProviderName, CadProvider], slicer: Slicer) -> None:
    for name, provider in providers.items():
        reason = await provider.unavailable_reason()
        if reason is None:
            _LOGGER.info("CAD provider %s is available", name)
        elif name is ProviderName.PARAMETRIC:
            # The library still builds a family from its parameters.
            _LOGGER.info("CAD provider %s reads no prompts: %s", name, reason)
        else:
            _LOGGER.info("CAD provider %s is unavailable: %s", name, reason)
    if slicer.available:
        _LOGGER.info("Slicing with %s", slicer.command)
    else:
        _LOGGER.warning("Slicer %r not found; parts are not sliced", slicer.command)


class ArtifactQuery(BaseModel):
    """The query of `GET /api/cad/artifacts`."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT)
    conversation_id: str | None = Field(default=None, min_length=1, max_length=128)


@dataclass(frozen=True, slots=True)
class CadApi:
    """The handlers, bound to one running CAD service."""

    options: CadOptions
    store: CadStore
    jobs: CadJobs

    def add_routes(self, app: web.Application) -> None:
        """Add the CAD routes to `app`."""
        app.router.add_post("/api/cad/generate", self.generate)
        app.router.add_get("/api/cad/jobs/{job_id}", self.job)
        app.router.add_get("/api/cad/artifacts", self.artifacts)
        app.router.add_get("/api/cad/artifacts/{artifact_id}", self.artifact)
        app.router.add_get("/api/cad/artifacts/{artifact_id}/files/{name}", self.file)
        app.router.add_get("/api/cad/artifacts/{artifact_id}/lineage", self.lineage)
        app.router.add_get("/api/cad/families", self.families)
        app.router.add_get("/api/cad/printers", self.printers)

    async def generate(self, request: web.Request) -> web.Response:
        """Queue a job for the request's part; 202 with the job."""
        body = await read_model(request, GenerateRequest)
        job = await self.jobs.submit(body)
        return web.json_response(
            text=job.model_dump_json(),
            status=HTTPStatus.ACCEPTED,
            headers={hdrs.LOCATION: f"/api/cad/jobs/{job.id}"},
        )

    async def job(self, request: web.Request) -> web.Response:
        """Answer one job, with its variants' results."""
        job = await self.store.get_job(request.match_info["job_id"])
        if job is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "job_not_found", "There is no such job")
        return web.json_response(text=job.model_dump_json())

    async def artifacts(self, request: web.Request) -> web.Response:
        """Answer the newest artifacts, of one conversation when asked."""
        try:
            query = ArtifactQuery.model_validate(dict(request.query))
        except ValidationError as err:
            raise ApiError(
                HTTPStatus.UNPROCESSABLE_CONTENT, "invalid_request", describe_errors(err)
            ) from None
        artifacts = await self.store.list_artifacts(
            limit=query.limit, conversation_id=query.conversation_id
        )
        return web.json_response(
            {"artifacts": [artifact.model_dump(mode="json") for artifact in artifacts]}
        )

    async def artifact(self, request: web.Request) -> web.Response:
        """Answer one artifact."""
        artifact = await self._artifact(request)
        return web.json_response(text=artifact.model_dump_json())

    async def file(self, request: web.Request) -> web.FileResponse:
        """Stream one file of an artifact; only the names the artifact lists exist."""
        artifact = await self._artifact(request)
        name = request.match_info["name"]
        entry = next((entry for entry in artifact.files if entry.name == name), None)
        if entry is None:
            raise ApiError(
                HTTPStatus.NOT_FOUND,
                "file_not_found",
                f"The artifact has no file {name!r}; it has "
                + ", ".join(entry.name for entry in artifact.files),
            )
        return web.FileResponse(
            self.jobs.artifacts_dir / artifact.id / entry.name,
            headers={
                hdrs.CONTENT_TYPE: CONTENT_TYPES[entry.kind],
                hdrs.CONTENT_DISPOSITION: f'attachment; filename="{artifact.id}-{entry.name}"',
            },
        )

    async def lineage(self, request: web.Request) -> web.Response:
        """Answer the artifact with its ancestors (parent first) and its children."""
        artifact = await self._artifact(request)
        lineage = Lineage(
            artifact=artifact,
            ancestors=await self.store.ancestors(artifact.id),
            children=await self.store.children(artifact.id),
        )
        return web.json_response(text=lineage.model_dump_json())

    async def families(self, _request: web.Request) -> web.Response:
        """Answer the part families of the library, with their parameters' schemas."""
        return web.json_response(
            {"families": [info.model_dump(mode="json") for info in family_info()]}
        )

    async def printers(self, _request: web.Request) -> web.Response:
        """Answer the printers parts are made for, and which one is the default."""
        default = self.options.printer(None)
        printers = [
            PrinterProfileInfo(
                name=printer.name,
                build_volume_mm=printer.build_volume,
                default=printer is default,
            ).model_dump(mode="json")
            for printer in self.options.printers
        ]
        return web.json_response({"printers": printers})

    async def _artifact(self, request: web.Request) -> Artifact:
        artifact = await self.store.get_artifact(request.match_info["artifact_id"])
        if artifact is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "artifact_not_found", "There is no such artifact")
        return artifact
