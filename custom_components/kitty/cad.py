"""KITTY's CAD service from Home Assistant: its client, its newest part, its errors.

The CAD service is optional: an entry uses one when its options name it. The newest
part (for the image entity) is read when the entry loads, after every part made
through Home Assistant, whenever the service announces a finished job over MQTT,
and, as a safety net, every few minutes.
"""

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
import re
import shutil
import tempfile
from typing import Any, Final, override

from homeassistant.components import mqtt
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError

from kittyai.cad_client import CadClient, CadJobTimeoutError
from kittyai.catalog import ServiceName
from kittyai.client import KittyResponseError
from kittyai.contract import CAD_JOB
from kittyai.contract.cad import Artifact, CadJobEvent, FileKind, JobState

from .const import CAD_PREVIEW_DIR, CAD_PREVIEW_URL, DOMAIN
from .optional_service import (
    OptionalServiceCoordinator,
    ServiceErrorKeys,
    required_service,
    translated_service_errors,
)

PREVIEW_FILE: Final = "preview.png"
# Artifact ids become file names: only these characters may.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_ERROR_KEYS: Final = ServiceErrorKeys(
    rejected="cad_rejected",
    invalid_auth="cad_invalid_auth",
    unavailable="cad_unavailable",
    not_configured="cad_not_configured",
    by_code={"artifact_not_found": "unknown_artifact"},
)


@dataclass(frozen=True, slots=True)
class LatestPart:
    """The newest artifact of the CAD service, with its preview image."""

    artifact: Artifact
    preview: bytes | None


class LatestPartCoordinator(OptionalServiceCoordinator[CadClient, LatestPart | None]):
    """Keeps the CAD service's newest part; None while the service has made none."""

    service = ServiceName.CAD
    label = "CAD"
    error_keys = _ERROR_KEYS

    @override
    async def async_start(self) -> None:
        """Read the newest part without holding up setup, and follow finished jobs."""
        await super().async_start()
        await self._async_follow(CAD_JOB, self._async_handle_job)

    @override
    async def _async_fetch(self) -> LatestPart | None:
        """Ask for the newest artifact, and for its preview when it is a new one."""
        newest = await self.client.artifacts(limit=1)
        if not newest:
            return None
        artifact = newest[0]
        if self.data is not None and self.data.artifact.id == artifact.id:
            return self.data
        preview = None
        if any(file.name == PREVIEW_FILE for file in artifact.files):
            preview = await self.client.file(artifact.id, PREVIEW_FILE)
        return LatestPart(artifact, preview)

    @callback
    def _async_handle_job(self, msg: mqtt.ReceiveMessage) -> None:
        """Read the newest part again once a job finished with parts."""
        event = self._payload(CadJobEvent, msg)
        if event is not None and event.state is JobState.DONE and event.artifact_ids:
            self._async_refresh_in_background()


@contextmanager
def translated_cad_errors(client: CadClient) -> Iterator[None]:
    """Turn the CAD client's errors into Home Assistant's, with translated messages."""
    with translated_service_errors(client, _ERROR_KEYS):
        try:
            yield
        except CadJobTimeoutError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="cad_timeout",
                translation_placeholders={"job_id": err.job.id},
            ) from err


@callback
def loaded_cad(hass: HomeAssistant) -> LatestPartCoordinator:
    """Return the CAD service of the first loaded KITTY entry that has one; refuse without."""
    return required_service(hass, LatestPartCoordinator)


def preview_url(artifact_id: str) -> str:
    """Return where Home Assistant serves an artifact's preview, once it was saved."""
    return f"{CAD_PREVIEW_URL}/{artifact_id}.png"


def _file_stem(client: CadClient, artifact: Artifact) -> str:
    """Return an artifact's id for a file name; refuse one that could name another path."""
    if not _SAFE_ID.match(artifact.id):
        raise KittyResponseError(f"{client.url} sent an artifact id that is no file name")
    return artifact.id


async def async_save_preview(hass: HomeAssistant, client: CadClient, artifact: Artifact) -> Path:
    """Fetch an artifact's preview into `<config>/www/kitty/cad/`; return its path.

    Artifacts never change: a preview saved once is kept.
    """
    path = Path(hass.config.path(*CAD_PREVIEW_DIR, f"{_file_stem(client, artifact)}.png"))
    if await hass.async_add_executor_job(path.is_file):
        return path
    image = await client.file(artifact.id, PREVIEW_FILE)
    await hass.async_add_executor_job(_write_file, path, image)
    return path


@asynccontextmanager
async def async_artifact_gcode(hass: HomeAssistant, artifact_id: str) -> AsyncIterator[Path]:
    """Download an artifact's G-code to `kitty-<artifact_id>.gcode`; remove it afterwards.

    The file is named so because the printer shows the name it was uploaded under.
    """
    client = loaded_cad(hass).client
    with translated_cad_errors(client):
        artifact = await client.artifact(artifact_id)
        if (name := gcode_file(artifact)) is None:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="artifact_not_sliced",
                translation_placeholders={"artifact_id": artifact_id},
            )
        gcode = await client.file(artifact.id, name)
        stem = _file_stem(client, artifact)
    folder = Path(await hass.async_add_executor_job(tempfile.mkdtemp))
    try:
        path = folder / f"kitty-{stem}.gcode"
        await hass.async_add_executor_job(path.write_bytes, gcode)
        yield path
    finally:
        await hass.async_add_executor_job(shutil.rmtree, folder)


def _write_file(path: Path, data: bytes) -> None:
    """Write a file whole: the frontend never sees half a preview."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(path)


def artifact_files(artifact: Artifact) -> list[str]:
    """Return the names of an artifact's files."""
    return [file.name for file in artifact.files]


def gcode_file(artifact: Artifact) -> str | None:
    """Return the name of an artifact's G-code file; None when it was not sliced."""
    return next((file.name for file in artifact.files if file.kind is FileKind.GCODE), None)


def artifact_summary(artifact: Artifact, preview_path: Path | None) -> dict[str, Any]:
    """Return what an action's response and an LLM tool's data say about an artifact."""
    metrics = artifact.metrics
    return {
        "id": artifact.id,
        "variant": artifact.variant,
        "provider": artifact.provider.value,
        "family": artifact.family,
        "parameters": artifact.parameters,
        "parent_id": artifact.parent_id,
        "printer": artifact.printer,
        "material": artifact.material.value,
        "metrics": {
            "volume_mm3": metrics.volume_mm3,
            "bbox_mm": list(metrics.bbox_mm),
            "mass_g": metrics.mass_g,
        },
        "slice": artifact.slice.model_dump(mode="json") if artifact.slice else None,
        "preview_path": str(preview_path) if preview_path else None,
        "preview_url": preview_url(artifact.id) if preview_path else None,
        "files": artifact_files(artifact),
    }
