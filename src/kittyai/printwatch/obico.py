"""Scores from a self-hosted Obico ML API, the failure detector trained on real prints.

Obico's ML API (the `ml_api` service of obico-server, run separately; its model
weights are not part of KITTY) answers `GET <url>/p/?img=<image URL>` with the
failure boxes it finds, `{"detections": [[label, confidence, [xc, yc, w, h]], ...]}`,
and asks for `Authorization: Bearer <token>` when it is configured with one. The
score of a frame is the sum of the boxes' confidences, clipped to 1, as Obico
scores it.

The ML API fetches the picture itself, so each frame needs a URL it can reach
(`Frame.url`, given by the caller: the printer's snapshot URL, or Home Assistant's
camera proxy with its access token). What it judges is the picture behind that URL
at that moment, which may be a moment newer than the bytes the watch keeps as
evidence. A frame without a URL, an unreachable or failing ML API and an answer
that is not Obico's all score as unknown; only a rejected token raises.
"""

from http import HTTPStatus

import aiohttp
from yarl import URL

from kittyai.printwatch.detector import (
    Detector,
    DetectorAuthError,
    Frame,
    FrameContext,
    FrameScore,
)

DEFAULT_TIMEOUT = 30.0
MAX_MESSAGE_LENGTH = 200
# The length of a detection: label, confidence, box.
_DETECTION_FIELDS = 3


class ObicoDetector(Detector):
    """Asks a self-hosted Obico ML API for failure boxes on each snapshot."""

    name = "obico"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str | URL,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Ask the ML API at `url` (e.g. `http://obico:3333`), with `token` if it wants one."""
        self._session = session
        base = URL(str(url))
        self._endpoint = base.with_path(base.path.rstrip("/") + "/p/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def reset(self) -> None:
        """Forget nothing: every frame is judged on its own."""

    async def score(self, frame: Frame, context: FrameContext) -> FrameScore:
        """Return the sum of the failure boxes' confidences for the picture at `frame.url`."""
        if frame.url is None:
            return FrameScore(None, "no image URL for the Obico ML API to fetch")
        try:
            async with self._session.get(
                self._endpoint.with_query(img=frame.url),
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                if response.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
                    raise DetectorAuthError(f"{self._endpoint.origin()} rejected the token")
                if response.status != HTTPStatus.OK:
                    return await _refusal(response)
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as err:
            return FrameScore(None, f"no answer from the Obico ML API: {type(err).__name__}")
        except ValueError:
            return FrameScore(None, "the Obico ML API's answer is not JSON")
        return _detections(answer)


async def _refusal(response: aiohttp.ClientResponse) -> FrameScore:
    """Return the unknown score of an HTTP error, with the ML API's message if it sent one.

    It answers 400 when it could not fetch or decode the picture, 422 without a URL.
    """
    reason = f"the Obico ML API answered HTTP {response.status}"
    try:
        body = await response.json(content_type=None)
    except ValueError, aiohttp.ClientError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        reason = f"{reason}: {body['message'][:MAX_MESSAGE_LENGTH]}"
    return FrameScore(None, reason)


def _detections(answer: object) -> FrameScore:
    if not isinstance(answer, dict):
        return FrameScore(None, "the Obico ML API's answer is not an object")
    # Older ML APIs answer a failed fetch with 200, no detections and an error.
    if answer.get("error"):
        return FrameScore(
            None, f"the Obico ML API failed: {str(answer['error'])[:MAX_MESSAGE_LENGTH]}"
        )
    detections = answer.get("detections")
    if not isinstance(detections, list):
        return FrameScore(None, "the Obico ML API's answer has no detections")
    confidences = []
    for detection in detections:
        if not (isinstance(detection, list) and len(detection) == _DETECTION_FIELDS):
            return FrameScore(None, "the Obico ML API sent a detection that cannot be read")
        confidence = detection[1]
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            return FrameScore(None, "the Obico ML API sent a detection without a confidence")
        confidences.append(max(0.0, float(confidence)))
    total = sum(confidences)
    if not confidences:
        reason = "no failure found"
    else:
        reason = f"{len(confidences)} failure box(es), confidence {max(confidences):.2f} at most"
    return FrameScore(
        min(1.0, total), reason, {"boxes": float(len(confidences)), "confidence_sum": total}
    )
