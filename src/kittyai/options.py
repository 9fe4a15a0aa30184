"""Options every KITTY service reads from its options file.

Inside an app the Supervisor writes `/data/options.json` from the app's
`config.yaml` schema; as a plain process the file is whatever `--options` names.
Services extend `ServiceOptions` with their own fields.
"""

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr

LogLevel = Literal["trace", "debug", "info", "notice", "warning", "error", "fatal"]


class MqttOptions(BaseModel):
    """Where the MQTT broker is. Ignored when the Supervisor provides one."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False


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
    mqtt: MqttOptions | None = None

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read options from a JSON file; a missing file means all defaults."""
        if not path.exists():
            return cls()
        return cls.model_validate_json(path.read_bytes())
