"""Options every KITTY service reads from its options file.

Inside an app the Supervisor writes `/data/options.json` from the app's
`config.yaml` schema; as a plain process the file is whatever `--options` names.
Services extend `ServiceOptions` with their own fields.
"""

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

LogLevel = Literal["trace", "debug", "info", "notice", "warning", "error", "fatal"]


class MqttOptions(BaseModel):
    """Where the MQTT broker is. Ignored when the Supervisor provides one."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False


class ScopedToken(BaseModel):
    """A further API token that may do only what its scopes say."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="Who holds it, for the logs.")
    token: SecretStr = Field(min_length=16)
    scopes: list[str] = Field(min_length=1)

    @field_validator("scopes", mode="before")
    @classmethod
    def _split_scopes(cls, scopes: object) -> object:
        # An app's options schema cannot nest a list in a list of tokens: there
        # the scopes are one string, "runs:read runs:write" or comma-separated.
        if isinstance(scopes, str):
            return scopes.replace(",", " ").split()
        return scopes


class ServiceOptions(BaseModel):
    """Options shared by all services."""

    model_config = ConfigDict(extra="ignore")

    log_level: LogLevel = "info"
    # Inside an app container the service must be reachable from Core and the LAN.
    bind: str = "0.0.0.0"  # noqa: S104
    # 0 means the service's default port.
    port: int = Field(default=0, ge=0, le=65535)
    # Empty means: generate one on first start and keep it in the data dir.
    api_token: SecretStr | None = None
    # The api_token may do everything; these only what their scopes allow.
    scoped_tokens: list[ScopedToken] = Field(default_factory=list)
    mqtt: MqttOptions | None = None

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read options from a JSON file; a missing file means all defaults."""
        if not path.exists():
            return cls()
        return cls.model_validate_json(path.read_bytes())
