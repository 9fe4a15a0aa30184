"""The few Supervisor API calls a KITTY app makes.

Inside an app container the Supervisor injects `SUPERVISOR_TOKEN`; its API
answers `{"result": "ok", "data": ...}` or `{"result": "error", "message": ...}`.
"""

from collections.abc import Mapping
import os
from typing import Any, Literal, Self

import aiohttp
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError
from yarl import URL

from kittyai.validation import describe_errors

SUPERVISOR_TOKEN_ENV = "SUPERVISOR_TOKEN"  # noqa: S105 - a variable name
SUPERVISOR_URL_ENV = "SUPERVISOR_URL"
DEFAULT_SUPERVISOR_URL = "http://supervisor"
# The integration domain: the Supervisor only forwards discovery to that integration.
DISCOVERY_SERVICE = "kitty"
DEFAULT_TIMEOUT = 10.0


class SupervisorError(Exception):
    """The Supervisor could not be reached or refused the call."""


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

    async def _call(self, method: str, path: str, payload: object = None) -> Any:
        try:
            async with self._session.request(
                method,
                self._url / path,
                json=payload,
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise SupervisorError(f"Cannot reach the Supervisor for {method} /{path}") from err
        try:
            envelope = _Envelope.model_validate_json(text)
        except ValidationError:
            raise SupervisorError(
                f"Supervisor {method} /{path} answered HTTP {status} without its JSON envelope"
            ) from None
        if not 200 <= status < 300 or envelope.result == "error":  # noqa: PLR2004
            raise SupervisorError(
                f"Supervisor {method} /{path} failed with HTTP {status}: "
                f"{envelope.message or 'no message'}"
            )
        return envelope.data


def _parse[ModelT: BaseModel](model: type[ModelT], data: object) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise SupervisorError(
            f"Unexpected Supervisor answer for {model.__name__}: {describe_errors(err)}"
        ) from None
