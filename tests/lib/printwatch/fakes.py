"""Protocol-faithful fakes of the services the print watch's detectors call.

Each is a real aiohttp server on 127.0.0.1:

- `FakeVisionRouter`: KITTY's router's `POST /v1/chat/completions` (OpenAI Chat
  Completions, whole answers), with bearer authentication and KITTY's error body.
  It decodes the snapshot from the `image_url` data URI, refuses a request
  without one as the router's backend would, and answers with what `answer(image)`
  returns for the picture it received: the assistant's content, or an HTTP status.
- `FakeObicoML`: Obico's ML API `GET /p/?img=<url>`, which fetches the image from
  the URL itself (answering 400 with a message when it cannot, 422 without `img`,
  401 with an empty body for a wrong token) and answers the detections `detect(image)`
  returns.
- `SnapshotServer`: a camera's snapshot URL, serving the bytes it holds.
"""

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
import io
import itertools
import json
import time
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from PIL import Image, UnidentifiedImageError

from tests.helpers.loopback_server import LoopbackServer

_DATA_URI_PREFIX = "data:"


class BadRequestError(Exception):
    """The request is not one the real service would take; the message says why."""


@dataclass(frozen=True, slots=True)
class Status:
    """An HTTP error the fake answers with instead of a completion."""

    status: int
    message: str = "scripted error"


@dataclass(frozen=True, slots=True)
class ReceivedSnapshot:
    """A chat request the fake router received, with the picture it carried."""

    headers: CIMultiDict[str]
    body: dict[str, Any]
    media_type: str
    image: bytes


class FakeVisionRouter(LoopbackServer):
    """KITTY's router, answering chat completions about snapshots."""

    def __init__(self, *, token: str, answer: Callable[[bytes], str | Status]) -> None:
        """Require `token`; answer each snapshot with `answer(image bytes)`."""
        super().__init__()
        self.token = token
        self.answer = answer
        self.requests: list[ReceivedSnapshot] = []
        self._ids = itertools.count(1)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    async def _chat(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _kitty_error(401, "unauthorized", "Missing or invalid API token.")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _kitty_error(400, "invalid_request", "The request body is not valid JSON.")
        try:
            media_type, image = _snapshot(body)
        except BadRequestError as err:
            return _kitty_error(400, "invalid_request", str(err))
        self.requests.append(ReceivedSnapshot(request.headers.copy(), body, media_type, image))
        answer = self.answer(image)
        if isinstance(answer, Status):
            return _kitty_error(answer.status, "backend_error", answer.message)
        completion = {
            "id": f"chatcmpl-{next(self._ids):06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 812, "completion_tokens": 24, "total_tokens": 836},
        }
        return web.json_response(
            completion, headers={"X-Kitty-Tier": "local", "X-Kitty-Backend": "ollama"}
        )


def _snapshot(body: dict[str, Any]) -> tuple[str, bytes]:
    """Return the media type and bytes of the one picture in the last user message."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("messages must be a non-empty list")
    content = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    if not isinstance(content, list):
        raise BadRequestError("the last message carries no content parts")
    urls = [
        part["image_url"].get("url")
        for part in content
        if isinstance(part, dict)
        and part.get("type") == "image_url"
        and isinstance(part.get("image_url"), dict)
    ]
    if len(urls) != 1 or not isinstance(urls[0], str) or not urls[0].startswith(_DATA_URI_PREFIX):
        raise BadRequestError("expected one image_url part with a data URI")
    header, _, data = urls[0].removeprefix(_DATA_URI_PREFIX).partition(",")
    media_type, _, encoding = header.partition(";")
    if encoding != "base64":
        raise BadRequestError("the data URI is not base64")
    try:
        image = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(image)) as picture:
            picture.verify()
    except (binascii.Error, UnidentifiedImageError, OSError) as err:
        raise BadRequestError(f"the image_url does not hold a picture: {err}") from err
    return media_type, image


def _kitty_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}, "correlation_id": "test-0001"},
        status=status,
    )


class SnapshotServer(LoopbackServer):
    """A camera's snapshot URL: `GET /snapshot.jpg` serves `image`."""

    def __init__(self) -> None:
        """Serve nothing yet (404) until `image` is set."""
        super().__init__()
        self.image: bytes | None = None
        self.fetches = 0

    @property
    def snapshot_url(self) -> str:
        """Return the snapshot's URL."""
        return f"{self.url}/snapshot.jpg"

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/snapshot.jpg", self._snapshot)
        return app

    async def _snapshot(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.image is None:
            return web.Response(status=404)
        return web.Response(body=self.image, content_type="image/jpeg")


class FakeObicoML(LoopbackServer):
    """Obico's ML API: fetches `img` itself and reports failure boxes."""

    def __init__(
        self, *, detect: Callable[[bytes], list[list[Any]]], token: str | None = None
    ) -> None:
        """Answer each fetched picture with `detect(image)`; with `token`, require it."""
        super().__init__()
        self.detect = detect
        self.token = token
        self.requests: list[CIMultiDict[str]] = []
        self.fetched: list[str] = []

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/p/", self._predict)
        app.router.add_get("/hc/", self._health)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _predict(self, request: web.Request) -> web.Response:
        self.requests.append(request.headers.copy())
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            return web.Response(status=401)
        url = request.query.get("img")
        if url is None:
            return web.json_response(
                {"detections": [], "message": f"Invalid request params: {dict(request.query)}"},
                status=422,
            )
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response,
            ):
                response.raise_for_status()
                image = await response.read()
            with Image.open(io.BytesIO(image)) as picture:
                picture.verify()
        except (aiohttp.ClientError, UnidentifiedImageError, OSError) as err:
            return web.json_response(
                {"detections": [], "message": f"Failed to get image {url} - {err}"},
                status=400,
            )
        self.fetched.append(url)
        return web.json_response({"detections": self.detect(image)})
