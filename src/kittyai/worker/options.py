"""Options of a worker, and the node id it keeps in its data dir."""

from pathlib import Path
import re
import secrets
import socket
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from kittyai.contract.orchestrator import CAPABILITY_PATTERN, ID_PATTERN
from kittyai.options import LogLevel, MqttOptions

NODE_ID_FILE = "node_id"
# `cad`, `slice`, `gpu`, `print:<printer>`.
type Capability = Annotated[str, Field(pattern=CAPABILITY_PATTERN)]
_NOT_IN_ID = re.compile(r"[^a-z0-9_.-]+")
# Leaves room for the random suffix within ID_PATTERN's 64 characters.
_MAX_HOST_PART = 40


class OrchestratorConnection(BaseModel):
    """Where the orchestrator is, and the token to claim work with."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://", description="e.g. http://192.168.1.20:8773")
    # Needs the scope `nodes:register`.
    token: SecretStr = Field(min_length=1)


class WorkerOptions(BaseModel):
    """What one worker runs and how it reaches the orchestrator and the broker."""

    model_config = ConfigDict(extra="forbid")

    log_level: LogLevel = "info"
    # Unset: made once from the host name and kept in the data dir.
    node_id: str | None = Field(default=None, pattern=ID_PATTERN)
    orchestrator: OrchestratorConnection
    capabilities: list[Capability] = Field(min_length=1)
    max_jobs: int = Field(default=1, ge=1, le=1024, description="Steps it runs at once.")
    heartbeat_s: float = Field(default=10.0, ge=0.1, le=300)
    mqtt: MqttOptions | None = None
    # On SIGTERM, running steps get this long to finish before they are given back.
    stop_grace_s: float = Field(default=5.0, ge=0, le=600)

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read the options file; it must exist, since it names the orchestrator."""
        return cls.model_validate_json(path.read_bytes())


def node_id_of(data_dir: Path) -> str:
    """Return the node id kept in `data_dir`, made from the host name on the first start."""
    path = data_dir / NODE_ID_FILE
    if path.exists() and (node_id := path.read_text(encoding="utf-8").strip()):
        return node_id
    data_dir.mkdir(parents=True, exist_ok=True)
    host = _NOT_IN_ID.sub("-", socket.gethostname().lower()).strip("-._")[:_MAX_HOST_PART]
    # The suffix tells apart the workers of one machine, each with its own data dir.
    node_id = f"{host or 'node'}-{secrets.token_hex(3)}"
    path.write_text(node_id + "\n", encoding="utf-8")
    return node_id
