"""What a service keeps about itself in its data dir: instance id and API token."""

from collections.abc import Callable
from dataclasses import dataclass, field
import os
from pathlib import Path
import secrets
from typing import Self

from pydantic import SecretStr

INSTANCE_ID_FILE = "instance_id"
API_TOKEN_FILE = "api_token"  # noqa: S105 - a file name


@dataclass(frozen=True, slots=True)
class Identity:
    """The stable identity of one service installation."""

    instance_id: str
    api_token: str = field(repr=False)

    @classmethod
    def load(cls, data_dir: Path, configured_token: SecretStr | None) -> Self:
        """Read the identity from `data_dir`, creating what is missing.

        The instance id is created once and survives restarts and upgrades. The
        API token is the configured one; without one, a token is generated on the
        first start and kept (readable by the owner only) so clients stay paired.
        """
        data_dir.mkdir(parents=True, exist_ok=True)
        instance_id = _read_or_create(
            data_dir / INSTANCE_ID_FILE, lambda: secrets.token_hex(16), mode=0o644
        )
        if configured_token is not None and configured_token.get_secret_value():
            return cls(instance_id, configured_token.get_secret_value())
        api_token = _read_or_create(
            data_dir / API_TOKEN_FILE, lambda: secrets.token_urlsafe(32), mode=0o600
        )
        return cls(instance_id, api_token)


def _read_or_create(path: Path, generate: Callable[[], str], *, mode: int) -> str:
    if path.exists() and (value := path.read_text(encoding="utf-8").strip()):
        return value
    value = generate()
    # os.open applies the mode at creation, so the file is never world-readable.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(value + "\n")
    return value
