"""What every backend adapter takes and gives back.

Requests and messages use OpenAI's Chat Completions shapes, since that is what the
router's own API speaks; each adapter translates to its backend's wire format and
normalises the answer, the token usage and the errors.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

from kittyai.contract.routing import TokenUsage
from kittyai.router.options import BackendOptions

type Message = dict[str, Any]

# Timeout, conflict and rate limit: the same call may well succeed a moment later.
_RETRYABLE_STATUSES = frozenset({408, 409, 429})


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """One chat turn to send to a backend."""

    # OpenAI Chat Completions messages: system, user, assistant (with tool_calls), tool.
    messages: list[Message]
    # OpenAI tool definitions: {"type": "function", "function": {name, description, parameters}}.
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    # Ask for token logprobs (with the top 2 alternatives) when the backend can give them.
    logprobs: bool = False
    # OpenAI `response_format`, passed on where the backend understands it.
    response_format: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool the model wants called; `arguments` is a JSON object as text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The log-probability of one generated token and of its best alternatives."""

    token: str
    logprob: float
    # Log-probabilities of the most likely tokens at this position, highest first.
    top: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendReply:
    """A backend's complete answer to one request."""

    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    # OpenAI's finish reasons: stop, length, tool_calls, content_filter.
    finish_reason: str = "stop"
    model: str
    usage: TokenUsage = field(default_factory=TokenUsage)
    # None when the backend gave no logprobs.
    logprobs: tuple[TokenLogprob, ...] | None = None
    # Sources of a search-grounded answer, as the backend gave them.
    citations: tuple[str, ...] = ()


class BackendError(Exception):
    """A call to a backend failed; the router decides whether to retry or fall back."""

    def __init__(
        self,
        backend: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Describe the failure; `status` is None when no HTTP answer came."""
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Return whether the same call may succeed later: timeouts, 408, 409, 429 and 5xx."""
        return (
            self.status is None
            or self.status in _RETRYABLE_STATUSES
            or self.status >= HTTPStatus.INTERNAL_SERVER_ERROR
        )


class Backend(Protocol):
    """A model server behind one wire protocol."""

    options: BackendOptions

    async def complete(self, request: ChatRequest) -> BackendReply:
        """Send `request` and return the whole answer; raise `BackendError` on failure."""

    def stream(self, request: ChatRequest) -> AsyncIterator[str | BackendReply]:
        """Send `request` and yield text deltas as they come, then the whole answer last.

        Raise `BackendError` on failure, also in the middle of a stream.
        """

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Return one embedding per text; raise `BackendError` if the backend has none."""
