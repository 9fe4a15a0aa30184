"""A vision model's verdict on each snapshot, asked through KITTY's router.

`VisionDetector` sends the snapshot to an OpenAI-compatible chat completions
endpoint — KITTY's router at `<router>/v1/chat/completions` — as an `image_url`
content part (a base64 data URI), and asks for a structured verdict with a JSON
schema: `{"failure": bool, "confidence": 0..1, "reason": str}`.

Local first: the caller picks the routing profile as the model. `kitty-local`
keeps every snapshot in the house (only the local backends see it); `kitty-auto`
may send a snapshot to a cloud model when the local one is unsure, and that costs
money at one snapshot every few seconds. The model must understand images: a
text-only model answers junk, which scores as unknown, never as a failure.

A verdict of failure scores its confidence; a verdict of no failure scores 0,
however unsure. Anything else — no answer, an HTTP error, text that is not the
verdict, a confidence outside [0, 1] — scores as unknown, and the watch's smoothed
score stays where it was. Only a rejected token raises (`DetectorAuthError`).
"""

import base64
from http import HTTPStatus
import json
from typing import Any

import aiohttp
from yarl import URL

from kittyai.printwatch.detector import (
    Detector,
    DetectorAuthError,
    Frame,
    FrameContext,
    FrameScore,
    image_type,
)

DEFAULT_MODEL = "kitty-local"
# A local vision model on a small machine can take this long for one picture.
DEFAULT_TIMEOUT = 60.0
MAX_REASON_LENGTH = 300

INSTRUCTIONS = (
    "You watch a 3D printer through a camera while it prints. Judge one snapshot: has"
    " the print failed? Failures are spaghetti (loose tangled strands of filament), a"
    " part knocked loose or dragged around, a blob of filament around the nozzle, and"
    " printing into the air. Stringing, layer lines, the toolhead, clips, cables and"
    " reflections are not failures. Answer with the JSON verdict only: failure (true"
    " or false), confidence (0 to 1, how sure you are) and reason (one short sentence"
    " about what you see)."
)
# KITTY's router never answers a turn with an image from its answer cache; the
# question must not sound like fresh facts either, which go to the search model.
QUESTION = "Has the print on this 3D printer failed? Here is its camera snapshot."

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "failure": {"type": "boolean", "description": "Whether the print has failed."},
        "confidence": {
            "type": "number",
            "description": "How sure the verdict is, from 0 to 1.",
        },
        "reason": {"type": "string", "description": "What the snapshot shows, briefly."},
    },
    "required": ["failure", "confidence", "reason"],
    "additionalProperties": False,
}
RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "print_verdict", "strict": True, "schema": VERDICT_SCHEMA},
}


class VisionDetector(Detector):
    """Asks a vision model, through KITTY's router, whether each snapshot shows a failure."""

    name = "vision"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str | URL,
        token: str,
        *,
        model: str = DEFAULT_MODEL,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Ask the router at `url` (its base, without `/v1`) with `token`, for the `model` profile.

        The session is the caller's (Home Assistant's shared one) and stays open.
        """
        self._session = session
        self._endpoint = URL(str(url)).join(URL("/v1/chat/completions"))
        self._headers = {"Authorization": f"Bearer {token}"}
        self._model = model
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    @property
    def model(self) -> str:
        """Return the routing profile (or backend) asked."""
        return self._model

    def reset(self) -> None:
        """Forget nothing: every frame is judged on its own."""

    async def score(self, frame: Frame, context: FrameContext) -> FrameScore:
        """Return the model's verdict on `frame` as a score; unknown when there is none."""
        known = image_type(frame.image)
        if known is None:
            return FrameScore(None, "the snapshot is not a JPEG or PNG picture")
        picture = base64.b64encode(frame.image).decode("ascii")
        body = {
            "model": self._model,
            "messages": [
                {"role": "system", "content": INSTRUCTIONS},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": QUESTION},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:{known[0]};base64,{picture}"},
                        },
                    ],
                },
            ],
            "response_format": RESPONSE_FORMAT,
            "temperature": 0,
            "max_tokens": 200,
            "stream": False,
        }
        try:
            async with self._session.post(
                self._endpoint, json=body, headers=self._headers, timeout=self._timeout
            ) as response:
                if response.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
                    raise DetectorAuthError(f"{self._endpoint.origin()} rejected the token")
                if response.status != HTTPStatus.OK:
                    return FrameScore(None, f"the router answered HTTP {response.status}")
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as err:
            return FrameScore(None, f"no answer from the router: {type(err).__name__}")
        except ValueError:
            return FrameScore(None, "the router's answer is not JSON")
        return _verdict(answer)


class _UnreadableError(Exception):
    """The answer holds no verdict; the message says why."""


def _verdict(answer: object) -> FrameScore:
    """Return the score of a chat completion that should hold the verdict."""
    try:
        failure, confidence, reason = _read_verdict(answer)
    except _UnreadableError as err:
        return FrameScore(None, str(err))
    return FrameScore(
        confidence if failure else 0.0,
        reason or ("failure" if failure else "no failure"),
        {"failure": float(failure), "confidence": confidence},
    )


def _read_verdict(answer: object) -> tuple[bool, float, str]:
    """Return failure, confidence and reason from a chat completion, or raise why not."""
    try:
        message = answer["choices"][0]["message"]  # type: ignore[index]
        content = message.get("content")
    except KeyError, IndexError, TypeError, AttributeError:
        raise _UnreadableError("the router's answer holds no message") from None
    if not isinstance(content, str) or not content.strip():
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            raise _UnreadableError(f"the model refused: {refusal[:MAX_REASON_LENGTH]}")
        raise _UnreadableError("the model gave no verdict")
    verdict = _json_object(content)
    if verdict is None:
        raise _UnreadableError("the model's verdict is not JSON")
    failure, confidence, reason = (verdict.get(key) for key in ("failure", "confidence", "reason"))
    if not isinstance(failure, bool):
        raise _UnreadableError("the model's verdict says neither failure nor not")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise _UnreadableError("the model's verdict has no confidence")
    if not 0 <= confidence <= 1:
        raise _UnreadableError(f"the model's confidence {confidence} is outside 0 to 1")
    text = reason.strip()[:MAX_REASON_LENGTH] if isinstance(reason, str) else ""
    return failure, float(confidence), text


def _json_object(content: str) -> dict[str, Any] | None:
    """Return the JSON object in `content`: the whole text, or the first object in it.

    Models that ignore the schema wrap the object in a Markdown fence or a sentence.
    """
    text = content.strip()
    try:
        found = json.loads(text)
    except ValueError:
        start = text.find("{")
        if start < 0:
            return None
        try:
            found, _ = json.JSONDecoder().raw_decode(text, start)
        except ValueError:
            return None
    return found if isinstance(found, dict) else None
