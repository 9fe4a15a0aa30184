"""Tripo's text-to-model: a paid cloud that answers a description with a mesh, not B-rep.

Suited to organic and decorative shapes; the part has an STL only (no STEP, no 3MF).
The wire format, from Tripo's apiv3 SDKs (`tripo3d` 1.0, the Rust and Go SDKs):

- Every answer is an envelope `{"code", "data", "message", "suggestion"}`; `code` 0 is
  success. `Authorization: Bearer tsk_...`; a refused key is HTTP 401.
- `POST /v3/generation/text-to-model` with `{"prompt", ...}` answers `data.task_id`.
- `GET /v3/tasks/{task_id}` answers the task `{task_id, type, status, progress, output,
  error_code, error_msg}`; `status` moves from `queued` and `running` to `success` or to
  `failed`, `cancelled`, `banned` or `expired`. `output` holds signed URLs of the model.
- Generation makes a GLB; `POST /v3/models/convert` with `{"input": <task_id>, "format":
  "STL"}` is a task too, whose `output.model` is the STL's URL.
- `GET /v3/account/balance` answers `data.balance`: the key check.

The model URLs are signed and served by a storage host, so they are fetched without the
key. Assumption, unconfirmed without a paid key: the STL is in millimetres, as slicers
read every STL, and Tripo sizes the model itself; it is checked against the printer as is.
"""

import asyncio
from http import HTTPStatus
import logging
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from kittyai.cad.mesh import mesh_metrics, stl_watertight
from kittyai.cad.options import CloudOptions
from kittyai.cad.providers.base import ProviderError, ProviderResult, VariantTask
from kittyai.cad.providers.cloud import KEY_REJECTED_STATUSES, REQUEST_TIMEOUT_S, CloudProvider
from kittyai.contract.cad import FileKind, PartMetrics, ProviderName

_LOGGER = logging.getLogger(__name__)

# Tripo's SDKs wait this long between two looks at a running task.
POLL_INTERVAL_S = 2.0
KEY_PREFIX = "tsk_"
BAD_KEY_FORMAT = f"the Tripo API key must start with {KEY_PREFIX}"
NOT_WATERTIGHT = "Tripo's mesh is not watertight, so it cannot be sliced reliably"
_GENERATE_PATH = "/v3/generation/text-to-model"
_CONVERT_PATH = "/v3/models/convert"
_TASK_PATH = "/v3/tasks/{task_id}"
_BALANCE_PATH = "/v3/account/balance"
_SUCCESS = "success"
_GAVE_UP = frozenset({"failed", "cancelled", "banned", "expired"})
# Where a task's output may name its model, in the order Tripo's SDKs look.
_MODEL_FIELDS = ("model_url", "model", "pbr_model", "base_model")
# A printed part needs neither texture nor PBR materials, and they cost credits.
_MESH_ONLY = {"texture": False, "pbr": False}


class TripoProvider(CloudProvider):
    """Makes a variant with Tripo's text-to-model, converted to STL and checked for printing."""

    name = ProviderName.TRIPO
    _vendor = "Tripo"
    _probe_path = _BALANCE_PATH
    _default_poll_interval = POLL_INTERVAL_S

    def _key_format_problem(self, key: str) -> str | None:
        """Return BAD_KEY_FORMAT unless `key` has the prefix of every Tripo key."""
        return None if key.startswith(KEY_PREFIX) else BAD_KEY_FORMAT

    def _endpoint(self, cloud: CloudOptions) -> tuple[str, SecretStr | None]:
        """Return `cloud.tripo_url` and Tripo's key."""
        return cloud.tripo_url, cloud.tripo_api_key

    async def _fetch(self, prompt: str) -> bytes:
        """Return the STL of the model Tripo made from `prompt`."""
        model = await self._run_task(_GENERATE_PATH, {"prompt": prompt, **_MESH_ONLY})
        converted = await self._run_task(
            _CONVERT_PATH, {"input": model["task_id"], "format": "STL"}
        )
        return await self._download(_model_url(converted))

    def _build(self, made: bytes, task: VariantTask) -> ProviderResult:
        """Write the STL as the part's and return it, if it is watertight and fits the printer."""
        path = task.out_dir / "part.stl"
        path.write_bytes(made)
        try:
            metrics = _printable_metrics(path, task)
        except ProviderError:
            path.unlink()
            raise
        return ProviderResult(files={FileKind.STL: path}, metrics=metrics)

    async def _run_task(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a task at `path` and return it once it succeeded."""
        created = self._data(*await self._call("POST", path, body))
        task_id = created.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise ProviderError("Tripo's answer names no task")
        _LOGGER.info("Tripo task %s created at %s", task_id, path)
        while True:
            task = self._data(*await self._call("GET", _TASK_PATH.format(task_id=task_id)))
            status = task.get("status")
            if status == _SUCCESS:
                return task
            if status in _GAVE_UP:
                reason = task.get("error_msg") or "no reason given"
                raise self._error(f"Tripo could not make the part ({status}): {reason}")
            await asyncio.sleep(self._poll_interval)

    def _data(self, status: int, answer: Any) -> dict[str, Any]:
        """Return the `data` of Tripo's envelope, or raise what Tripo said went wrong."""
        # A refused key is the answer, whatever the envelope says.
        if (
            status not in KEY_REJECTED_STATUSES
            and isinstance(answer, dict)
            and answer.get("code") == 0
            and isinstance(data := answer.get("data"), dict)
        ):
            return data
        raise self._unexpected(status, answer)

    async def _download(self, url: str) -> bytes:
        """Return the model file at a signed URL; the key stays with Tripo's API."""
        try:
            async with self._session.get(
                url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
            ) as response:
                if response.status != HTTPStatus.OK:
                    raise ProviderError(f"Tripo's STL download answered HTTP {response.status}")
                return await response.read()
        except TimeoutError:
            raise ProviderError(
                f"Tripo's STL did not download within {REQUEST_TIMEOUT_S:g} s"
            ) from None
        except aiohttp.ClientError as err:
            raise ProviderError(f"Tripo's STL cannot be downloaded: {type(err).__name__}") from None


def _model_url(task: dict[str, Any]) -> str:
    """Return the URL of a successful task's model."""
    output = task.get("output")
    if isinstance(output, dict):
        for field in _MODEL_FIELDS:
            url = output.get(field)
            if isinstance(url, str) and url.startswith(("https://", "http://")):
                return url
    raise ProviderError("Tripo's finished task names no model file")


def _printable_metrics(path: Path, task: VariantTask) -> PartMetrics:
    """Return the metrics of the STL at `path`, or raise why it cannot be printed."""
    try:
        watertight = stl_watertight(path)
        metrics = mesh_metrics(path, task.density_g_cm3) if watertight else None
    except ValueError as err:
        raise ProviderError(f"Tripo's STL file cannot be read: {err}") from None
    if metrics is None:
        raise ProviderError(NOT_WATERTIGHT)
    volume = task.printer.build_volume
    if any(extent > limit for extent, limit in zip(metrics.bbox_mm, volume, strict=True)):
        raise ProviderError(
            f"Tripo's part is {_size(metrics.bbox_mm)} mm, larger than the build volume "
            f"of {task.printer.name} ({_size(volume)} mm)"
        )
    return metrics


def _size(extents: tuple[float, float, float]) -> str:
    return " \N{MULTIPLICATION SIGN} ".join(f"{extent:g}" for extent in extents)
