"""The orchestrator's engine, as the rest of KITTY sees it.

Nothing outside `kittyai.orchestrator.dbos_engine` knows that DBOS Transact runs
the workflows: the API, the tests and a future engine use this interface.
"""

import builtins
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from kittyai.contract.orchestrator import (
    ApprovalRequest,
    ArtifactInfo,
    CreateRunRequest,
    RunErrorCode,
    RunEvent,
    RunInfo,
    RunList,
    RunState,
)


class RunError(Exception):
    """A request the engine refuses; nothing was changed."""

    def __init__(self, code: RunErrorCode, message: str) -> None:
        """Refuse with `code`; `message` tells a human what to change."""
        super().__init__(message)
        self.code = code
        self.message = message


class RunEngine(Protocol):
    """Start, decide, cancel, retry and inspect runs."""

    async def create(
        self, request: CreateRunRequest, *, correlation_id: str | None = None
    ) -> tuple[RunInfo, bool]:
        """Plan and start a run; return it and whether it is new (False: same idempotency key)."""

    async def decide(self, run_id: str, request: ApprovalRequest) -> RunInfo:
        """Record an approval or rejection at the gate the run waits at."""

    async def cancel(self, run_id: str, reason: str | None) -> RunInfo:
        """Stop a run that has not finished; what it did is undone."""

    async def retry(self, run_id: str, from_step: int | str | None) -> RunInfo:
        """Run a finished, unsuccessful run again from a step; earlier results are kept."""

    async def get(self, run_id: str) -> RunInfo:
        """Return one run."""

    async def list(
        self,
        *,
        states: frozenset[RunState] = frozenset(),
        template: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> RunList:
        """Return runs, newest first, filtered by state and template."""

    async def artifacts(self, run_id: str) -> builtins.list[ArtifactInfo]:
        """Return the artifacts of a run, oldest first."""

    async def artifact_file(self, run_id: str, artifact_id: str) -> tuple[ArtifactInfo, Path]:
        """Return one artifact and where its file is."""

    def events(self, *, after: int = 0, run_id: str | None = None) -> AsyncIterator[RunEvent]:
        """Yield events with `seq > after` (stored ones first), then new ones as they happen."""
