"""The model a service asks, through any OpenAI-compatible chat API (KITTY's router).

The CAD service asks it for part choices and scripts, the knowledge service for
project summaries.
"""

from dataclasses import dataclass, field
from http import HTTPStatus
import json
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr

type Message = dict[str, str]
# The JSON services ask for is a choice, a few numbers or a few short lists; a model
# that keeps going (grammar-constrained output may pad with whitespace) is cut off early.
JSON_MAX_TOKENS = 512


class ModelOptions(BaseModel):
    """The OpenAI-compatible model the service asks: KITTY's router, normally."""

    model_config = ConfigDict(extra="forbid")

    # Unset: no model; a service then does only what it can without one.
    url: str | None = Field(default=None, description="Base URL, e.g. http://127.0.0.1:8770/v1.")
    api_key: SecretStr | None = None
    model: str = "kitty-auto"
    timeout: float = Field(default=120.0, gt=0)
    # A whole CAD script fits; a small model that rambles on is cut off instead of
    # holding the server for minutes.
    max_tokens: int = Field(default=2048, ge=64, le=32768)


class ModelError(Exception):
    """The model could not be asked, or did not answer as asked."""


class _RefusedRequestError(ModelError):
    """The server could not handle the request itself, as opposed to being busy or down."""


# How servers, and the router in front of them (502), refuse a request they cannot
# handle, such as a `response_format` they do not know.
_REFUSALS = frozenset(
    {
        HTTPStatus.BAD_REQUEST,
        HTTPStatus.UNPROCESSABLE_CONTENT,
        HTTPStatus.INTERNAL_SERVER_ERROR,
        HTTPStatus.BAD_GATEWAY,
    }
)


@dataclass(slots=True)
class ChatModel:
    """Asks one OpenAI-compatible model for text or for JSON that fits a schema."""

    session: aiohttp.ClientSession
    options: ModelOptions
    # OpenAI's `json_schema` form until the server refuses it; llama-cpp-python's
    # server only takes `json_object` with a `schema` beside it.
    _schema_form: str = field(default="json_schema", init=False)

    @property
    def configured(self) -> bool:
        """Return whether a model URL is set."""
        return self.options.url is not None

    async def complete(self, messages: list[Message], *, temperature: float = 0.2) -> str:
        """Return the model's answer to `messages`."""
        return await self._chat({"messages": messages, "temperature": temperature})

    async def complete_json(
        self,
        messages: list[Message],
        *,
        schema_name: str,
        schema: dict[str, Any],
        temperature: float = 0.2,
    ) -> Any:
        """Return the model's answer as JSON, asked for with `schema` as structured output.

        Servers that enforce the schema (llama.cpp, OpenAI) answer valid JSON; the
        caller still validates it, since not every server does.
        """
        body: dict[str, Any] = {
            "messages": messages,
            "temperature": temperature,
            "max_tokens": min(self.options.max_tokens, JSON_MAX_TOKENS),
        }
        while True:
            response_format = _response_format(self._schema_form, schema_name, schema)
            try:
                text = await self._chat({**body, "response_format": response_format})
            except _RefusedRequestError:
                if self._schema_form == "json_object":
                    raise
                self._schema_form = "json_object"
            else:
                break
        try:
            return json.loads(_strip_fence(text))
        except json.JSONDecodeError as err:
            raise ModelError(f"the model did not answer JSON: {err}") from None

    async def _chat(self, body: dict[str, Any]) -> str:
        if self.options.url is None:
            raise ModelError("no model is configured")
        headers = {}
        if self.options.api_key is not None:
            headers["Authorization"] = f"Bearer {self.options.api_key.get_secret_value()}"
        url = self.options.url.rstrip("/") + "/chat/completions"
        try:
            async with self.session.post(
                url,
                json={
                    "model": self.options.model,
                    "stream": False,
                    "max_tokens": self.options.max_tokens,
                    **body,
                },
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.options.timeout),
            ) as response:
                if response.status != HTTPStatus.OK:
                    error = _RefusedRequestError if response.status in _REFUSALS else ModelError
                    raise error(f"the model answered HTTP {response.status}")
                answer = await response.json()
        except (aiohttp.ClientError, TimeoutError) as err:
            raise ModelError(f"the model could not be reached: {err!r}") from None
        try:
            content = answer["choices"][0]["message"]["content"]
        except KeyError, IndexError, TypeError:
            raise ModelError("the model's answer has no message") from None
        if not isinstance(content, str) or not content.strip():
            raise ModelError("the model answered nothing")
        return content


def _response_format(form: str, name: str, schema: dict[str, Any]) -> dict[str, Any]:
    if form == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    return {"type": "json_object", "schema": schema}


def _strip_fence(text: str) -> str:
    """Return `text` without a Markdown code fence around it, which small models add."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.removesuffix("```").strip()
    return stripped
