"""What the adapters share: HTTP calls with their timeouts and errors, stream framing.

Every vendor's error body is read for its message, `Retry-After` is honoured, and the
API key is scrubbed from anything that ends up in an exception.
"""

from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
import json
from typing import Any

import aiohttp

from kittyai.router.backends.base import BackendError, TokenLogprob
from kittyai.router.options import BackendOptions

# A server error reported inside a stream that began with 200: the server failed mid-answer.
MID_STREAM_ERROR_STATUS = 500
_ERROR_SNIPPET = 300


class HttpBackend:
    """A backend reached over HTTP with JSON bodies."""

    def __init__(self, options: BackendOptions, session: aiohttp.ClientSession) -> None:
        """Call the server of `options` through `session`."""
        self.options = options
        self._session = session
        self._base_url = options.url.rstrip("/")

    @property
    def _api_key(self) -> str | None:
        return self.options.api_key.get_secret_value() if self.options.api_key else None

    def _headers(self) -> dict[str, str]:
        """Return the headers every call carries; adapters add the vendor's authentication."""
        return {}

    def _error(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> BackendError:
        """Return a `BackendError` whose text hides the API key, even if a server echoed it."""
        if (key := self._api_key) and key in message:
            message = message.replace(key, "***")
        return BackendError(self.options.name, message, status=status, retry_after=retry_after)

    def _connection_error(self, err: aiohttp.ClientError) -> BackendError:
        if isinstance(err, aiohttp.ClientConnectorError):
            return self._error(f"cannot reach the server: {err}")
        return self._error(f"the connection failed: {err}")

    def _decode(self, text: str | bytes) -> Any:
        """Parse one JSON document the server sent."""
        try:
            return json.loads(text)
        except ValueError:
            raise self._error(f"malformed answer: {_snippet(text)}") from None

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        """POST `body` and return the JSON answer; the whole call gets `options.timeout`."""
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        try:
            async with self._session.post(
                self._base_url + path, json=body, headers=self._headers(), timeout=timeout
            ) as response:
                await self._raise_for_status(response)
                raw = await response.read()
        except TimeoutError:
            raise self._error(f"no answer within {self.options.timeout:g} s") from None
        except aiohttp.ClientError as err:
            raise self._connection_error(err) from None
        return self._decode(raw)

    async def _post_lines(self, path: str, body: dict[str, Any]) -> AsyncGenerator[str]:
        """POST `body` and yield the answer's lines as they arrive.

        `options.timeout` bounds the wait for each piece of the answer, not the whole
        answer, so a long reply streams as long as the server keeps talking.
        """
        seconds = self.options.timeout
        timeout = aiohttp.ClientTimeout(total=None, connect=seconds, sock_read=seconds)
        try:
            async with self._session.post(
                self._base_url + path, json=body, headers=self._headers(), timeout=timeout
            ) as response:
                await self._raise_for_status(response)
                pending = b""
                async for data in response.content.iter_any():
                    *lines, pending = (pending + data).split(b"\n")
                    for line in lines:
                        yield line.decode(errors="replace").removesuffix("\r")
                if pending:
                    yield pending.decode(errors="replace")
        except TimeoutError:
            raise self._error(f"the server went silent for {seconds:g} s") from None
        except aiohttp.ClientError as err:
            raise self._connection_error(err) from None

    async def _post_events(self, path: str, body: dict[str, Any]) -> AsyncGenerator[str]:
        """POST `body` and yield the data of each server-sent event of the answer.

        Event names are left out: every vendor repeats them as `type` in the data.
        """
        data: list[str] = []
        async with aclosing(self._post_lines(path, body)) as lines:
            async for line in lines:
                if not line:
                    if data:
                        yield "\n".join(data)
                    data = []
                    continue
                field, _, value = line.partition(":")
                if field == "data":
                    data.append(value.removeprefix(" "))
        if data:
            yield "\n".join(data)

    async def _raise_for_status(self, response: aiohttp.ClientResponse) -> None:
        """Raise a `BackendError` with the server's own message when it refused the call."""
        if response.ok:
            return
        text = await response.text(errors="replace")
        try:
            message = error_message(json.loads(text))
        except ValueError:
            message = None
        raise self._error(
            message or _snippet(text) or response.reason or "request failed",
            status=response.status,
            retry_after=retry_after_seconds(response.headers),
        )


def error_message(body: Any) -> str | None:
    """Return the message of a vendor's error body, whichever of the common shapes it has."""
    if not isinstance(body, dict):
        return None
    # OpenAI, Perplexity, Anthropic: {"error": {"message": ...}}; Ollama: {"error": "..."}.
    error = body.get("error", body)
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        # vLLM puts the message at the top level, FastAPI servers in `detail`.
        message = error.get("message") or error.get("detail")
        return message if isinstance(message, str) else None
    return None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Return how long the server asked to wait, from `retry-after-ms` or `Retry-After`."""
    if (milliseconds := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(milliseconds) / 1000, 0.0)
        except ValueError:
            pass
    if (value := headers.get("Retry-After")) is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except TypeError, ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def text_of(content: Any) -> str:
    """Return the text of an OpenAI message content: a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(
        part.get("text", "")
        for part in content
        if isinstance(part, dict) and part.get("type") in {"text", "input_text", "output_text"}
    )


@dataclass(frozen=True, slots=True)
class Image:
    """An image part of an OpenAI message: base64 data from a data URI, or a URL."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None


def images_of(content: Any) -> list[Image]:
    """Return the `image_url` parts of an OpenAI message content, in order."""
    if not isinstance(content, list):
        return []
    images = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "image_url":
            continue
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        if not isinstance(url, str):
            continue
        header, comma, data = url.partition(",")
        if url.startswith("data:") and comma and header.endswith(";base64"):
            images.append(Image(media_type=header[5:].removesuffix(";base64"), data=data))
        else:
            images.append(Image(url=url))
    return images


def arguments_of(arguments: Any) -> dict[str, Any]:
    """Return a tool call's arguments as an object, from JSON text or an object."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        parsed = None
    # A call whose arguments the model garbled still happened; it is replayed without them.
    return parsed if isinstance(parsed, dict) else {}


def token_logprobs(items: Any) -> list[TokenLogprob]:
    """Parse `[{token, logprob, top_logprobs: [{token, logprob}]}]`, the shape all vendors use."""
    parsed = []
    for item in items or ():
        top = sorted(
            (float(alternative["logprob"]) for alternative in item.get("top_logprobs") or ()),
            reverse=True,
        )
        parsed.append(TokenLogprob(item.get("token", ""), float(item["logprob"]), tuple(top)))
    return parsed


def _snippet(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text.strip()[:_ERROR_SNIPPET]
