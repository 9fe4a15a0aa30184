"""Structured JSON logs with correlation ids and secret redaction.

Every line on stderr is one JSON object, which the Supervisor's log view, `docker
logs` and log shippers all handle. The correlation id of the request being
served travels in a context variable, so any logger used while handling a
request tags its lines without being passed the id.
"""

from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
import json
import logging
import sys
from typing import Any

from kittyai.options import LogLevel

REDACTED = "**REDACTED**"

# Set for the duration of one HTTP request (or any other unit of work).
CORRELATION_ID: ContextVar[str | None] = ContextVar("kitty_correlation_id", default=None)

# The Supervisor's app log levels, mapped onto Python's.
LOG_LEVELS: dict[LogLevel, int] = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
}

# Attributes every LogRecord has; anything else on a record came in through `extra`.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class SecretRedactor:
    """Knows the secret values of one service and blanks them out of text."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        """Start with `secrets`; empty and None values are ignored."""
        self._needles: tuple[str, ...] = ()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Redact `secret` from now on, raw and as it looks inside a JSON string."""
        if not secret:
            return
        needles = {*self._needles, secret, json.dumps(secret, ensure_ascii=False)[1:-1]}
        # Longest first, so a secret containing another one is replaced whole.
        self._needles = tuple(sorted(needles, key=len, reverse=True))

    def redact(self, text: str) -> str:
        """Return `text` with every known secret replaced."""
        for needle in self._needles:
            text = text.replace(needle, REDACTED)
        return text


class JsonFormatter(logging.Formatter):
    """Renders a record as one JSON line and redacts secrets from the whole line."""

    def __init__(self, service: str, redactor: SecretRedactor) -> None:
        """Tag every line with `service` (a ServiceName, or `worker`); scrub it with `redactor`."""
        super().__init__()
        self._service = str(service)
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        """Return the JSON line for `record`."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "service": self._service,
        }
        if (correlation_id := CORRELATION_ID.get()) is not None:
            line["correlation_id"] = correlation_id
        line.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _RECORD_ATTRIBUTES and key not in line
        )
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return self._redactor.redact(json.dumps(line, default=str, ensure_ascii=False))


def configure_logging(service: str, level: LogLevel, redactor: SecretRedactor) -> None:
    """Send all logging of this process to stderr as redacted JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, redactor))
    root = logging.getLogger()
    # The process runs exactly one service, so it owns the root logger.
    root.handlers[:] = [handler]
    root.setLevel(LOG_LEVELS[level])
