"""The CAD job runner: requests in, artifacts out, one job at a time, durably.

`submit` checks a request at once (printer, parent, family, parameters, size, provider)
so a mistake is answered with a 422 rather than a failed job, then stores the job and
queues it. One worker makes the jobs in order, and the variants of a job one after the
other. Per variant:

1. a provider makes the part in `<artifacts>/.work/<job>/<variant>/`: the one the
   request names; else the part library, handing over to the CadQuery provider when no
   family fits; a child of a part from no family goes to the parent's provider;
2. `preview.png` is rendered from the STL;
3. with `slice`, PrusaSlicer writes `part.gcode`. A failed slice does not lose the
   part: the artifact keeps its CAD files, and the variant's `error` says why it has
   no G-code;
4. the files are hashed, the new artifact id is noted in the job, the folder is renamed
   to `<artifacts>/<artifact id>/` and the artifact is stored together with the job's
   new state, in one transaction.

A failed variant does not fail the others; a job fails only when every variant failed.
Each change of a job is stored and published on `kitty/cad/job`. After a crash,
`resume` removes the work folders, and the folder of an artifact renamed but never
stored, and queues the unfinished jobs again. Variants already made are kept; the
unique (job, variant) index makes making one twice impossible.
"""

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
import hashlib
from http import HTTPStatus
import logging
from pathlib import Path
import shutil

from kittyai.cad.families import UnknownFamilyError
from kittyai.cad.options import MATERIAL_DENSITY, CadOptions, PrinterProfile
from kittyai.cad.preview import render_preview
from kittyai.cad.providers.base import CadProvider, ProviderError, ProviderResult, VariantTask
from kittyai.cad.providers.parametric import (
    InvalidParameters,
    NoFamilyFits,
    Plan,
    parse_parameters,
    plan,
    size_problem,
)
from kittyai.cad.slicer import Slicer, SlicerError
from kittyai.cad.store import CadStore, new_id
from kittyai.catalog import ServiceName
from kittyai.contract import CAD_JOB
from kittyai.contract.cad import (
    Artifact,
    ArtifactFile,
    CadJob,
    CadJobEvent,
    FileKind,
    GenerateRequest,
    JobState,
    ProviderName,
    SliceEstimate,
    VariantResult,
)
from kittyai.http_server import ApiError
from kittyai.mqtt import MqttLink

_LOGGER = logging.getLogger(__name__)

WORK_DIR_NAME = ".work"
PREVIEW_NAME = "preview.png"
GCODE_NAME = "part.gcode"
_HASH_CHUNK_BYTES = 1 << 20
_UNPROCESSABLE = HTTPStatus.UNPROCESSABLE_CONTENT


class Stage(Enum):
    """Where a variant is, and how far through its variant that is."""

    MAKING = (0.0, "making the part")
    RENDERING = (0.6, "rendering the preview")
    SLICING = (0.7, "slicing")
    STORING = (0.9, "storing the files")

    def __init__(self, share: float, words: str) -> None:
        """Describe the stage: its share of the variant done before it, and its words."""
        self.share = share
        self.words = words


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """What a checked request is made with."""

    printer: PrinterProfile
    parent: Artifact | None
    # Tried in order; a provider finding no family fitting hands over to the next.
    providers: list[ProviderName]


class CadJobs:
    """Accepts CAD requests and makes them, one job at a time."""

    def __init__(
        self,
        *,
        options: CadOptions,
        store: CadStore,
        providers: Mapping[ProviderName, CadProvider],
        slicer: Slicer,
        mqtt: MqttLink,
        artifacts_dir: Path,
    ) -> None:
        """Make parts with `providers`, keep them in `artifacts_dir`, tell MQTT."""
        self._options = options
        self._store = store
        self._providers = providers
        self._slicer = slicer
        self._mqtt = mqtt
        self._artifacts_dir = artifacts_dir
        self._work_dir = artifacts_dir / WORK_DIR_NAME
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    @property
    def artifacts_dir(self) -> Path:
        """Return the folder holding one folder of files per artifact."""
        return self._artifacts_dir

    async def resume(self) -> int:
        """Clear what a crash left half-made and queue unfinished jobs again; count them."""
        await asyncio.to_thread(shutil.rmtree, self._work_dir, ignore_errors=True)
        jobs = await self._store.unfinished_jobs()
        for job in jobs:
            await self._remove_unstored_artifacts(job)
            self._queue.put_nowait(job.id)
        if jobs:
            _LOGGER.info("Resuming %d unfinished CAD jobs", len(jobs))
        return len(jobs)

    async def submit(self, request: GenerateRequest) -> CadJob:
        """Check `request`, store it as a queued job and queue it.

        Raises:
            ApiError: 422 when the request cannot be made (see `prepare`).
        """
        await self.prepare(request)
        job = await self._store.create_job(request)
        self._publish(job)
        self._queue.put_nowait(job.id)
        return job

    async def prepare(self, request: GenerateRequest) -> Prepared:
        """Return the printer, parent and providers `request` is made with.

        Raises:
            ApiError: 422 `unknown_printer`, `unknown_parent`, `unknown_family`,
                `invalid_parameters`, `exceeds_build_volume`, `provider_unavailable`, or
                `invalid_request` when there is nothing to vary or nothing to change.
        """
        printer = self._options.printer(request.printer)
        if printer is None:
            names = ", ".join(known.name for known in self._options.printers)
            raise ApiError(
                _UNPROCESSABLE,
                "unknown_printer",
                f"there is no printer {request.printer!r}; the printers: {names}",
            )
        parent = None
        if request.parent_id is not None:
            parent = await self._store.get_artifact(request.parent_id)
            if parent is None:
                raise ApiError(
                    _UNPROCESSABLE,
                    "unknown_parent",
                    f"there is no artifact {request.parent_id!r} to change",
                )
        if request.variants > 1 and request.prompt is None:
            raise ApiError(
                _UNPROCESSABLE,
                "invalid_request",
                "variants: more than one variant needs a prompt to read in different ways",
            )
        try:
            how = plan(request, parent)
        except UnknownFamilyError as err:
            raise ApiError(_UNPROCESSABLE, "unknown_family", str(err)) from None
        if request.prompt is None and how.family is None:
            raise ApiError(
                _UNPROCESSABLE,
                "invalid_request",
                "the parent was not made from a part family: say in a prompt what to change",
            )
        providers = self._providers_for(request, parent, how)
        if how.family is not None and providers[0] is ProviderName.PARAMETRIC:
            try:
                parameters = parse_parameters(how.family, how.parameters)
            except InvalidParameters as err:
                raise ApiError(_UNPROCESSABLE, "invalid_parameters", str(err)) from None
            if (problem := size_problem(how.family, parameters, printer)) is not None:
                raise ApiError(_UNPROCESSABLE, "exceeds_build_volume", problem)
        await self._check_available(providers, how)
        return Prepared(printer=printer, parent=parent, providers=providers)

    async def run_forever(self) -> None:
        """Make the queued jobs, one after the other, until cancelled."""
        while True:
            job_id = await self._queue.get()
            job = await self._store.get_job(job_id)
            if job is None or job.state not in (JobState.QUEUED, JobState.RUNNING):
                continue
            try:
                await self._run(job)
            except Exception:
                # A bug in one job must not stop the others.
                _LOGGER.exception("CAD job %s failed unexpectedly", job.id)
                await self._finish(job, error="internal error; see the CAD service's log")

    def _providers_for(
        self, request: GenerateRequest, parent: Artifact | None, how: Plan
    ) -> list[ProviderName]:
        if request.provider is not None:
            return [request.provider]
        if parent is not None and how.family is None:
            return [parent.provider]
        if how.family is None and ProviderName.CADQUERY in self._providers:
            return [ProviderName.PARAMETRIC, ProviderName.CADQUERY]
        return [ProviderName.PARAMETRIC]

    async def _check_available(self, providers: list[ProviderName], how: Plan) -> None:
        """Raise `provider_unavailable` unless one of `providers` can be used now."""
        reasons = []
        for name in providers:
            provider = self._providers.get(name)
            if provider is None:
                reasons.append(f"the {name} provider is not installed")
                continue
            # The library builds a family without a model; only reading a prompt needs one.
            if name is ProviderName.PARAMETRIC and not how.needs_model:
                return
            reason = await provider.unavailable_reason()
            if reason is None:
                return
            reasons.append(f"{name}: {reason}")
        raise ApiError(_UNPROCESSABLE, "provider_unavailable", "; ".join(reasons))

    async def _run(self, job: CadJob) -> None:
        try:
            prepared = await self.prepare(job.request)
        except ApiError as err:
            # Options or providers changed since the job was accepted.
            await self._finish(job, error=err.message)
            return
        job.state = JobState.RUNNING
        for variant in job.variants:
            if variant.state in (JobState.QUEUED, JobState.RUNNING):
                await self._run_variant(job, prepared, variant.variant)
        await asyncio.to_thread(shutil.rmtree, self._work_dir / job.id, ignore_errors=True)
        await self._finish(job)

    async def _run_variant(self, job: CadJob, prepared: Prepared, index: int) -> None:
        out_dir = self._work_dir / job.id / str(index)
        await asyncio.to_thread(_empty_folder, out_dir)
        job.variants[index] = VariantResult(variant=index, state=JobState.RUNNING)
        try:
            await self._make_variant(job, prepared, index, out_dir)
        except ProviderError as err:
            await self._variant_failed(job, index, str(err), repair_rounds=err.repair_rounds)
        except Exception as err:
            _LOGGER.exception("Variant %d of CAD job %s failed unexpectedly", index, job.id)
            await self._variant_failed(job, index, f"internal error: {type(err).__name__}")
        finally:
            await asyncio.to_thread(shutil.rmtree, out_dir, ignore_errors=True)

    async def _make_variant(
        self, job: CadJob, prepared: Prepared, index: int, out_dir: Path
    ) -> None:
        await self._progress(job, index, Stage.MAKING)
        material = job.request.material
        task = VariantTask(
            request=job.request,
            variant=index,
            variants=len(job.variants),
            parent=prepared.parent,
            printer=prepared.printer,
            material=material,
            density_g_cm3=MATERIAL_DENSITY[material],
            out_dir=out_dir,
        )
        provider, result = await self._make(task, prepared.providers)
        await self._progress(job, index, Stage.RENDERING)
        files = await self._add_preview(result, out_dir)
        estimate, slice_error = await self._slice(job, index, prepared.printer, files, out_dir)
        described = await asyncio.to_thread(_describe, files, out_dir)
        # The id is stored before its folder appears: after a crash between the rename
        # and the insert, `resume` knows which folder to remove.
        artifact_id = new_id()
        job.variants[index] = VariantResult(
            variant=index, state=JobState.RUNNING, provider=provider, artifact_id=artifact_id
        )
        await self._progress(job, index, Stage.STORING)
        # One rename: the artifact's folder is whole or absent, never half-written.
        await asyncio.to_thread(out_dir.rename, self._artifacts_dir / artifact_id)
        artifact = Artifact(
            id=artifact_id,
            job_id=job.id,
            parent_id=job.request.parent_id,
            variant=index,
            prompt=job.request.prompt,
            provider=provider,
            family=result.family,
            parameters=result.parameters,
            script=result.script,
            conversation_id=job.request.conversation_id,
            printer=prepared.printer.name,
            material=material,
            metrics=result.metrics,
            slice=estimate,
            files=described,
            created_at=datetime.now(UTC),
        )
        job.variants[index] = VariantResult(
            variant=index,
            state=JobState.DONE,
            provider=provider,
            artifact_id=artifact_id,
            error=slice_error,
            repair_rounds=result.repair_rounds,
        )
        self._touch(job, index + 1)
        try:
            await self._store.add_artifact(artifact, job)
        except Exception:
            # Not on cancellation: the insert may still commit, and `resume` decides.
            await asyncio.to_thread(shutil.rmtree, self._artifacts_dir / artifact_id)
            raise
        self._publish(job, f"variant {index + 1} of {len(job.variants)} done")

    async def _make(
        self, task: VariantTask, providers: list[ProviderName]
    ) -> tuple[ProviderName, ProviderResult]:
        """Return the part of the first provider that makes one."""
        *first, last = providers
        for name in first:
            try:
                return name, await self._providers[name].generate(task)
            except NoFamilyFits as err:
                _LOGGER.info("Variant %d: %s; trying the next provider", task.variant, err)
        return last, await self._providers[last].generate(task)

    async def _add_preview(self, result: ProviderResult, out_dir: Path) -> dict[FileKind, Path]:
        """Return the provider's files and `preview.png`, drawn from its STL."""
        files = dict(result.files)
        stl = files.get(FileKind.STL)
        if stl is None:
            raise ProviderError("the provider made no STL")
        preview = out_dir / PREVIEW_NAME
        await asyncio.to_thread(render_preview, stl, preview)
        files[FileKind.PREVIEW] = preview
        return files

    async def _slice(
        self,
        job: CadJob,
        index: int,
        printer: PrinterProfile,
        files: dict[FileKind, Path],
        out_dir: Path,
    ) -> tuple[SliceEstimate | None, str | None]:
        """Slice the STL into `part.gcode` when asked; return the estimate, or why not."""
        if not job.request.slice:
            return None, None
        if not self._slicer.available:
            return None, f"not sliced: the slicer {self._slicer.command!r} is not installed"
        await self._progress(job, index, Stage.SLICING)
        gcode = out_dir / GCODE_NAME
        try:
            estimate = await self._slicer.slice(
                files[FileKind.STL], gcode, printer, job.request.material
            )
        except SlicerError as err:
            return None, f"not sliced: {err}"
        files[FileKind.GCODE] = gcode
        return estimate, None

    async def _variant_failed(
        self, job: CadJob, index: int, message: str, *, repair_rounds: int = 0
    ) -> None:
        _LOGGER.info("Variant %d of CAD job %s failed: %s", index, job.id, message)
        job.variants[index] = VariantResult(
            variant=index, state=JobState.FAILED, error=message, repair_rounds=repair_rounds
        )
        self._touch(job, index + 1)
        await self._store.update_job(job)
        self._publish(job, f"variant {index + 1} of {len(job.variants)} failed: {message}")

    async def _progress(self, job: CadJob, index: int, stage: Stage) -> None:
        self._touch(job, index + stage.share)
        await self._store.update_job(job)
        self._publish(job, f"variant {index + 1} of {len(job.variants)}: {stage.words}")

    async def _finish(self, job: CadJob, *, error: str | None = None) -> None:
        """Store and publish the job's end: done if any variant was made, else failed."""
        problems = "; ".join(
            f"variant {variant.variant + 1}: {variant.error}"
            for variant in job.variants
            if variant.error is not None
        )
        made = any(variant.state is JobState.DONE for variant in job.variants)
        if error is None and not made:
            error = problems or "no variant was made"
        job.state = JobState.FAILED if error is not None else JobState.DONE
        job.error = error
        self._touch(job, len(job.variants))
        await self._store.update_job(job)
        # A done job may still have failed variants, or parts that are not sliced.
        self._publish(job, error or problems or None)

    def _touch(self, job: CadJob, variants_done: float) -> None:
        job.progress = round(min(variants_done / len(job.variants), 1.0), 3)
        job.updated_at = datetime.now(UTC)

    def _publish(self, job: CadJob, message: str | None = None) -> None:
        event = CadJobEvent(
            job_id=job.id,
            state=job.state,
            progress=job.progress,
            message=message,
            artifact_ids=[
                variant.artifact_id
                for variant in job.variants
                if variant.state is JobState.DONE and variant.artifact_id is not None
            ],
            conversation_id=job.request.conversation_id,
            at=job.updated_at,
        )
        self._mqtt.publish_event(CAD_JOB.topic(ServiceName.CAD), event, qos=CAD_JOB.qos)

    async def _remove_unstored_artifacts(self, job: CadJob) -> None:
        """Remove the folders of artifacts a crash left between their rename and insert."""
        for variant in job.variants:
            if variant.state is not JobState.RUNNING or variant.artifact_id is None:
                continue
            if await self._store.get_artifact(variant.artifact_id) is None:
                folder = self._artifacts_dir / variant.artifact_id
                _LOGGER.info("Removing %s: its artifact was never stored", folder)
                await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)


def _empty_folder(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _describe(files: Mapping[FileKind, Path], out_dir: Path) -> list[ArtifactFile]:
    """Return name, size and sha256 of each file; they must lie in `out_dir` itself."""
    described = []
    for kind, path in files.items():
        if path.resolve().parent != out_dir.resolve():
            raise ProviderError(f"the {kind} file was written outside the variant's folder")
        digest = hashlib.sha256()
        with path.open("rb") as file:
            while chunk := file.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
        described.append(
            ArtifactFile(
                kind=kind, name=path.name, size=path.stat().st_size, sha256=digest.hexdigest()
            )
        )
    return described
