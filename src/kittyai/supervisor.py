"""The few Supervisor API calls a KITTY app makes.

Inside an app container the Supervisor injects `SUPERVISOR_TOKEN`; its API
answers `{"result": "ok", "data": ...}` or `{"result": "error", "message": ...}`.
Besides its own setup (broker, discovery), the orchestrator updates, restarts,
backs up and restores other apps, which needs the `manager` role.
"""

from collections.abc import Mapping, Sequence
from enum import StrEnum
from http import HTTPStatus
import os
from typing import Any, Literal, Self

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from yarl import URL

from kittyai.validation import describe_errors

SUPERVISOR_TOKEN_ENV = "SUPERVISOR_TOKEN"  # noqa: S105 - a variable name
SUPERVISOR_URL_ENV = "SUPERVISOR_URL"
DEFAULT_SUPERVISOR_URL = "http://supervisor"
# The integration domain: the Supervisor only forwards discovery to that integration.
DISCOVERY_SERVICE = "kitty"
DEFAULT_TIMEOUT = 10.0
# Updating an app pulls its image; backing up or restoring one copies its data.
LONG_TIMEOUT = 1800.0


class SupervisorError(Exception):
    """The Supervisor could not be reached or refused the call."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        """Fail with `message`; `status` is the HTTP status, None when there was no answer."""
        super().__init__(message)
        self.status = status


class MqttService(BaseModel):
    """The MQTT broker the Supervisor provides (`GET /services/mqtt`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    host: str
    # The Supervisor sends the port as a string, e.g. "1883".
    port: int
    ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None
    protocol: str = "3.1.1"


class AppInfo(BaseModel):
    """What this app learns about itself (`GET /addons/self/info`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # The container's hostname on the Supervisor network, reachable from Core.
    hostname: str


class AppRunState(StrEnum):
    """Whether an app runs, as the Supervisor reports it."""

    STARTUP = "startup"
    STARTED = "started"
    STOPPED = "stopped"
    ERROR = "error"
    UNKNOWN = "unknown"


class AppState(BaseModel):
    """Another app as the Supervisor reports it (`GET /addons/<slug>/info`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    slug: str
    state: AppRunState = AppRunState.UNKNOWN
    # None while the app is not installed.
    version: str | None = None
    version_latest: str | None = None
    update_available: bool = False


class BackupApp(BaseModel):
    """One app inside a backup."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    slug: str
    name: str | None = None
    version: str | None = None


class BackupInfo(BaseModel):
    """A backup the Supervisor keeps (`GET /backups/<slug>/info`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    slug: str
    name: str
    date: str | None = None
    type: str | None = None
    addons: list[BackupApp] = Field(default_factory=list)


class _BackupCreated(BaseModel):
    model_config = ConfigDict(extra="ignore")

    slug: str


class _Envelope(BaseModel):
    result: Literal["ok", "error"]
    data: Any = None
    message: str | None = None


class _DiscoveryCreated(BaseModel):
    model_config = ConfigDict(extra="ignore")

    uuid: str


class SupervisorClient:
    """Calls the Supervisor API with the app's token."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        token: str,
        url: str | URL = DEFAULT_SUPERVISOR_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Use `session` to reach the Supervisor at `url`."""
        self._session = session
        self._url = URL(str(url))
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    @classmethod
    def from_env(
        cls, session: aiohttp.ClientSession, environ: Mapping[str, str] = os.environ
    ) -> Self | None:
        """Return a client when running under a Supervisor, else None."""
        if not (token := environ.get(SUPERVISOR_TOKEN_ENV)):
            return None
        return cls(session, token, environ.get(SUPERVISOR_URL_ENV) or DEFAULT_SUPERVISOR_URL)

    async def get_mqtt_service(self) -> MqttService:
        """Return the broker the Supervisor provides; raises if there is none."""
        return _parse(MqttService, await self._call("GET", "services/mqtt"))

    async def get_self_info(self) -> AppInfo:
        """Return this app's own info."""
        return _parse(AppInfo, await self._call("GET", "addons/self/info"))

    async def announce_discovery(self, config: Mapping[str, Any]) -> str:
        """Offer `config` to the KITTY integration's config flow; return the message uuid."""
        data = await self._call(
            "POST", "discovery", {"service": DISCOVERY_SERVICE, "config": dict(config)}
        )
        return _parse(_DiscoveryCreated, data).uuid

    async def remove_discovery(self, uuid: str) -> None:
        """Withdraw a discovery message this app announced."""
        await self._call("DELETE", f"discovery/{uuid}")

    async def get_app_info(self, slug: str) -> AppState:
        """Return another app's state and versions."""
        return _parse(AppState, await self._call("GET", f"addons/{slug}/info"))

    async def update_app(self, slug: str, *, timeout_s: float = LONG_TIMEOUT) -> None:
        """Update an app to its latest version; returns once the Supervisor is done."""
        # KITTY takes its own backup first, so the Supervisor's is not wanted.
        await self._call(
            "POST", f"store/addons/{slug}/update", {"backup": False}, timeout_s=timeout_s
        )

    async def restart_app(self, slug: str, *, timeout_s: float = LONG_TIMEOUT) -> None:
        """Restart an app."""
        await self._call("POST", f"addons/{slug}/restart", timeout_s=timeout_s)

    async def partial_backup(
        self, name: str, apps: Sequence[str], *, timeout_s: float = LONG_TIMEOUT
    ) -> str:
        """Back up `apps` (not Home Assistant); return the backup's slug once it is written."""
        data = await self._call(
            "POST",
            "backups/new/partial",
            {"name": name, "addons": list(apps), "homeassistant": False},
            timeout_s=timeout_s,
        )
        return _parse(_BackupCreated, data).slug

    async def restore_partial_backup(
        self, slug: str, apps: Sequence[str], *, timeout_s: float = LONG_TIMEOUT
    ) -> None:
        """Restore `apps` from a backup; returns once the Supervisor is done."""
        await self._call(
            "POST",
            f"backups/{slug}/restore/partial",
            {"addons": list(apps), "homeassistant": False},
            timeout_s=timeout_s,
        )

    async def backup_info(self, slug: str) -> BackupInfo:
        """Return what a backup holds."""
        return _parse(BackupInfo, await self._call("GET", f"backups/{slug}/info"))

    async def _call(
        self, method: str, path: str, payload: object = None, *, timeout_s: float | None = None
    ) -> Any:
        try:
            async with self._session.request(
                method,
                self._url / path,
                json=payload,
                headers=self._headers,
                timeout=self._timeout
                if timeout_s is None
                else aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise SupervisorError(f"Cannot reach the Supervisor for {method} /{path}") from err
        try:
            envelope = _Envelope.model_validate_json(text)
        except ValidationError:
            if status == HTTPStatus.FORBIDDEN:
                # The Supervisor refuses calls beyond the app's role with a bare 403.
                raise SupervisorError(
                    f"Supervisor refused {method} /{path} (HTTP 403): the app's role does not"
                    " allow it (updating, restarting and restoring other apps needs `manager`)",
                    status=status,
                ) from None
            raise SupervisorError(
                f"Supervisor {method} /{path} answered HTTP {status} without its JSON envelope",
                status=status,
            ) from None
        if not 200 <= status < 300 or envelope.result == "error":  # noqa: PLR2004
            raise SupervisorError(
                f"Supervisor {method} /{path} failed with HTTP {status}: "
                f"{envelope.message or 'no message'}",
                status=status,
            )
        return envelope.data


def _parse[ModelT: BaseModel](model: type[ModelT], data: object) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise SupervisorError(
            f"Unexpected Supervisor answer for {model.__name__}: {describe_errors(err)}"
        ) from None
