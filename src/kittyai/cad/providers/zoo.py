"""Zoo's text-to-CAD: a paid cloud that answers a description with a B-rep part.

The wire format, from Zoo's API reference and its `kittycad` SDK (up to 1.4):

- `POST /ai/text-to-cad/step` with `{"prompt": ...}` and `Authorization: Bearer <key>`
  answers 201 with a TextToCad object `{id, status, outputs, error, ...}`: `queued`, or
  at once `completed` when Zoo has the answer cached.
- `GET /user/text-to-cad/{id}` answers the same object while its status moves through
  `queued`, `uploaded` and `in_progress` to `completed` or `failed` (with `error`).
- `outputs` maps file names (`source.step`, ...) to their bytes in base64, URL-safe and
  unpadded as the SDK decodes it. STEP is always there: it is Zoo's source of truth.
- `GET /user` answers the key's user; 401 or 403, with `{"message", "request_id"}` as
  every Zoo error, refuses the key.

SDK 1.5 (2026-08) dropped the create call in favour of the Zookeeper websocket, and
whether the server still takes it is unconfirmed. This provider speaks REST only: a 404,
405 or 410 on create is read as "the route moved" and fails the variant saying so.

The STEP declares its unit and CadQuery's importer scales it to millimetres, so the part
is checked against the printer as it is.
"""

import asyncio
import base64
import binascii
from http import HTTPStatus
import logging
from typing import Any

import cadquery as cq
from pydantic import SecretStr

from kittyai.cad.geometry import GeometryError, check_part, export_part, measure
from kittyai.cad.options import CloudOptions
from kittyai.cad.providers.base import ProviderError, ProviderResult, VariantTask
from kittyai.cad.providers.cloud import CloudProvider
from kittyai.contract.cad import ProviderName

_LOGGER = logging.getLogger(__name__)

# Zoo's own clients wait this long between two looks at a running request.
POLL_INTERVAL_S = 5.0
_CREATE_PATH = "/ai/text-to-cad/step"
_STATUS_PATH = "/user/text-to-cad/{id}"
_USER_PATH = "/user"
_MOVED = frozenset({HTTPStatus.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED, HTTPStatus.GONE})
_OK = frozenset({HTTPStatus.OK})
_CREATED = frozenset({HTTPStatus.OK, HTTPStatus.CREATED})
_COMPLETED = "completed"
_FAILED = "failed"
# The temporary name of Zoo's STEP while CadQuery reads it; `export_part` writes the part's.
_SOURCE_NAME = "zoo-source.step"


class ZooProvider(CloudProvider):
    """Makes a variant with Zoo's text-to-CAD, then checks and exports it like any part."""

    name = ProviderName.ZOO
    _vendor = "Zoo"
    _probe_path = _USER_PATH
    _default_poll_interval = POLL_INTERVAL_S

    def _endpoint(self, cloud: CloudOptions) -> tuple[str, SecretStr | None]:
        """Return `cloud.zoo_url` and Zoo's key."""
        return cloud.zoo_url, cloud.zoo_api_key

    async def _fetch(self, prompt: str) -> bytes:
        """Return the STEP Zoo made from `prompt`."""
        return _step_output(await self._text_to_cad(prompt))

    def _build(self, made: bytes, task: VariantTask) -> ProviderResult:
        """Read Zoo's STEP with CadQuery, check it against the printer and export the part."""
        source = task.out_dir / _SOURCE_NAME
        source.write_bytes(made)
        try:
            try:
                imported = cq.importers.importStep(str(source))
            except ValueError:
                raise ProviderError("Zoo's STEP file cannot be read") from None
            shape = check_part(imported, task.printer.build_volume)
            files = export_part(shape, task.out_dir)
            metrics = measure(shape, task.density_g_cm3)
        except GeometryError as err:
            raise ProviderError(f"Zoo's part cannot be printed: {err}") from None
        finally:
            source.unlink(missing_ok=True)
        return ProviderResult(files=files, metrics=metrics)

    async def _text_to_cad(self, prompt: str) -> dict[str, Any]:
        """Create the text-to-CAD request and return it once Zoo has settled it."""
        status, answer = await self._call("POST", _CREATE_PATH, {"prompt": prompt})
        if status in _MOVED:
            raise ProviderError(
                f"Zoo no longer accepts text-to-CAD requests over REST (HTTP {status}); "
                "its SDK moved generation to the Zookeeper websocket, which KITTY does not "
                "speak yet: use the parametric or cadquery provider"
            )
        answer = self._checked(status, answer, _CREATED)
        request_id = answer.get("id")
        if not isinstance(request_id, str) or not request_id:
            raise ProviderError("Zoo's answer names no text-to-CAD request")
        _LOGGER.info("Zoo text-to-CAD request %s is %s", request_id, answer.get("status"))
        while answer.get("status") not in {_COMPLETED, _FAILED}:
            await asyncio.sleep(self._poll_interval)
            status, polled = await self._call("GET", _STATUS_PATH.format(id=request_id))
            answer = self._checked(status, polled, _OK)
        if answer["status"] == _FAILED:
            reason = answer.get("error") or "no reason given"
            raise self._error(f"Zoo could not make the part: {reason}")
        return answer

    def _checked(self, status: int, answer: Any, expected: frozenset[int]) -> dict[str, Any]:
        """Return `answer` if Zoo answered as expected, else raise what went wrong."""
        if status in expected and isinstance(answer, dict):
            return answer
        raise self._unexpected(status, answer)


def _step_output(answer: dict[str, Any]) -> bytes:
    """Return the STEP file among a completed request's outputs."""
    outputs = answer.get("outputs")
    encoded = next(
        (
            data
            for name, data in (outputs.items() if isinstance(outputs, dict) else ())
            if name.lower().endswith((".step", ".stp")) and isinstance(data, str)
        ),
        None,
    )
    if encoded is None:
        raise ProviderError("Zoo's answer has no STEP file")
    # URL-safe or standard alphabet, padded or not: all read alike once normalised.
    normalised = encoded.strip().replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(normalised + "=" * (-len(normalised) % 4), validate=True)
    except binascii.Error:
        raise ProviderError("Zoo's STEP file is not valid base64") from None
