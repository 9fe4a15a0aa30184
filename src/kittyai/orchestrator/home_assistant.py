"""The few Home Assistant Core REST calls the orchestrator's templates make.

Core is reached either at a configured URL with a long-lived access token, or,
inside an app, through the Supervisor's Core proxy (`http://supervisor/core`) with
the app's `SUPERVISOR_TOKEN`. No error message contains the token.
"""

from collections.abc import Mapping
import json
import os
from typing import Any, Self

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from kittyai.orchestrator.options import HomeAssistantOptions
from kittyai.supervisor import DEFAULT_SUPERVISOR_URL, SUPERVISOR_TOKEN_ENV, SUPERVISOR_URL_ENV
from kittyai.validation import describe_errors

DEFAULT_TIMEOUT = 10.0
# A config check loads and validates every integration's configuration.
CHECK_CONFIG_TIMEOUT = 120.0
# Core's own messages are short; anything longer is a page that is not Core's.
_MESSAGE_LIMIT = 500


class HomeAssistantError(Exception):
    """Home Assistant could not be reached, refused the token, or refused the call."""


class ConfigCheck(BaseModel):
    """What Core's configuration check found (`POST /api/config/core/check_config`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    valid: bool
    # Core's text: one line per problem, with the file and line where it knows them.
    errors: str | None = None
    warnings: str | None = None


class EntityState(BaseModel):
    """One entity's state (`GET /api/states/<entity_id>`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    entity_id: str
    state: str
    attributes: dict[str, Any] = Field(default_factory=dict)


class _CheckConfigAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    result: str
    errors: str | None = None
    warnings: str | None = None


class _CoreConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # `RUNNING` once Core has started; `NOT_RUNNING`, `STARTING` or `STOPPING` otherwise.
    state: str


class HomeAssistantClient:
    """Calls Home Assistant Core's REST API with a bearer token."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str | URL,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Use `session` to reach Core at `url` (the part before `/api`)."""
        self._session = session
        self._url = URL(str(url).rstrip("/"))
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout

    @classmethod
    def from_options(
        cls,
        session: aiohttp.ClientSession,
        options: HomeAssistantOptions,
        environ: Mapping[str, str] = os.environ,
    ) -> Self | None:
        """Return a client for the configured Core, else the Supervisor's Core proxy, else None."""
        if options.url and options.token is not None:
            return cls(session, options.url, options.token.get_secret_value())
        if token := environ.get(SUPERVISOR_TOKEN_ENV):
            supervisor = URL(environ.get(SUPERVISOR_URL_ENV) or DEFAULT_SUPERVISOR_URL)
            return cls(session, supervisor / "core", token)
        return None

    @property
    def url(self) -> URL:
        """Return Core's base URL."""
        return self._url

    async def check_config(self) -> ConfigCheck:
        """Check Core's configuration files as they are on disk now."""
        body = await self._request(
            "POST", "/api/config/core/check_config", timeout_s=CHECK_CONFIG_TIMEOUT
        )
        answer = _parse(_CheckConfigAnswer, _json(body, "the config check"), "the config check")
        return ConfigCheck(
            valid=answer.result == "valid", errors=answer.errors, warnings=answer.warnings
        )

    async def call_service(
        self, domain: str, service: str, data: Mapping[str, Any] | None = None
    ) -> None:
        """Call `domain.service` with `data` and wait until Core has carried it out."""
        await self._request("POST", f"/api/services/{domain}/{service}", dict(data or {}))

    async def get_state(self, entity_id: str) -> EntityState | None:
        """Return an entity's state; None when Core has no such entity."""
        body = await self._request("GET", f"/api/states/{entity_id}", missing_ok=True)
        if body is None:
            return None
        return _parse(EntityState, _json(body, "an entity state"), "an entity state")

    async def render_template(self, template: str) -> str:
        """Return what Core renders `template` to, as text."""
        body = await self._request("POST", "/api/template", {"template": template})
        return body or ""

    async def get_core_state(self) -> str:
        """Return Core's run state: `RUNNING` once it has started."""
        body = await self._request("GET", "/api/config")
        return _parse(_CoreConfig, _json(body, "Core's config"), "Core's config").state

    async def restart(self) -> None:
        """Ask Core to restart; it may drop the connection while it goes down."""
        try:
            await self.call_service("homeassistant", "restart")
        except HomeAssistantError as err:
            # Core stops before it answers; a lost connection means it is restarting.
            if not isinstance(err.__cause__, aiohttp.ClientConnectionError | TimeoutError):
                raise

    async def _request(
        self,
        method: str,
        path: str,
        payload: object = None,
        *,
        timeout_s: float | None = None,
        missing_ok: bool = False,
    ) -> str | None:
        """Send one request; return the body, or None for a 404 when `missing_ok`."""
        try:
            async with self._session.request(
                method,
                self._url.with_path(self._url.path.rstrip("/") + path, encoded=False),
                json=payload,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s or self._timeout),
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise HomeAssistantError(
                f"Cannot reach Home Assistant at {self._url} for {method} {path}"
            ) from err
        if status == 404 and missing_ok:  # noqa: PLR2004
            return None
        if status in {401, 403}:
            raise HomeAssistantError(
                f"Home Assistant refused the token for {method} {path} (HTTP {status});"
                " it needs an administrator's long-lived access token"
            )
        if not 200 <= status < 300:  # noqa: PLR2004
            raise HomeAssistantError(
                f"Home Assistant {method} {path} failed with HTTP {status}: {_message(text)}"
            )
        return text


def _json(text: str | None, what: str) -> Any:
    try:
        return json.loads(text or "")
    except ValueError:
        raise HomeAssistantError(f"Home Assistant sent {what} that is not JSON") from None


def _message(text: str) -> str:
    """Return Core's `{"message": ...}`, or the start of whatever else it answered."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:_MESSAGE_LIMIT]
    return text.strip()[:_MESSAGE_LIMIT] or "no message"


def _parse[ModelT: BaseModel](model: type[ModelT], data: object, what: str) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise HomeAssistantError(
            f"Unexpected Home Assistant answer for {what}: {describe_errors(err)}"
        ) from None
