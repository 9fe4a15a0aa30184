"""What workers and the orchestrator exchange over HTTP: claims, leases, logs and outcomes.

The orchestrator serves these routes (`kittyai.orchestrator.work_api`) and workers
call them (`kittyai.worker.client`); both sides validate with these models. Every
call about a work item carries the lease token the item was handed out with; once
that lease has ended (expired, given back, or the item finished or timed out) the
orchestrator answers 409 `stale_lease`, so a step is never completed twice.

Routes, all needing a token with the scope `nodes:register`:

- `POST /api/nodes/{node_id}/claim` (`ClaimRequest` → `ClaimResponse`): waits up
  to `wait_s` for work the node can run; an empty list when none came.
- `POST /api/work/{item_id}/heartbeat` (`LeaseRequest` → `LeaseRenewal`).
- `POST /api/work/{item_id}/log` (`LogRequest` → 204): also renews the lease.
- `POST /api/work/{item_id}/complete` (`CompleteRequest` → 204).
- `POST /api/work/{item_id}/fail` (`FailRequest` → 204).
- `POST /api/work/{item_id}/release` (`LeaseRequest` → 204): gives the item back
  for another node, e.g. when the worker stops.

Completing or failing again with the same token, as a worker does when the first
answer was lost, answers 204 and changes nothing.
"""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from kittyai.contract.orchestrator import ID_PATTERN, NodeCapacity

NODES_REGISTER_SCOPE = "nodes:register"
CLAIM_PATH = "/api/nodes/{node_id}/claim"
HEARTBEAT_PATH = "/api/work/{item_id}/heartbeat"
LOG_PATH = "/api/work/{item_id}/log"
COMPLETE_PATH = "/api/work/{item_id}/complete"
FAIL_PATH = "/api/work/{item_id}/fail"
RELEASE_PATH = "/api/work/{item_id}/release"
# Long enough to spare the orchestrator idle polling, short enough for proxies.
DEFAULT_CLAIM_WAIT_S = 20.0
MAX_CLAIM_WAIT_S = 30.0
MAX_LOG_LINES = 100
MAX_LOG_LINE_LENGTH = 4000
MAX_MESSAGE_LENGTH = 4000

type LogLine = Annotated[str, Field(max_length=MAX_LOG_LINE_LENGTH)]


class ClaimRequest(BaseModel):
    """A worker asks for work: who it is, what it can run, how much it can take."""

    model_config = ConfigDict(extra="forbid")

    # The same capacity the worker heartbeats on MQTT; `max_jobs - running_jobs`
    # is how many items it takes at most.
    capacity: NodeCapacity
    wait_s: float = Field(default=DEFAULT_CLAIM_WAIT_S, ge=0, le=MAX_CLAIM_WAIT_S)


class WorkItem(BaseModel):
    """One try of a step, handed to a worker with a lease on it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    lease_token: str
    run_id: str
    step: int = Field(ge=0, description="The step's index in its run.")
    step_name: str
    title: str
    kind: str
    capability: str
    params: dict[str, Any]
    # The step's try number, 1 for the first; a re-queued item keeps its try.
    attempt: int = Field(ge=1)
    timeout_s: float = Field(gt=0)
    # What the run's earlier steps returned, by step name, and the approver's pick.
    results: dict[str, dict[str, Any]] = Field(default_factory=dict)
    choice: str | None = None


class ClaimResponse(BaseModel):
    """The items handed to the worker; it must heartbeat each within the lease timeout."""

    model_config = ConfigDict(extra="forbid")

    items: list[WorkItem]
    lease_timeout_s: float = Field(gt=0)


class LeaseRequest(BaseModel):
    """A call about an item the worker holds."""

    model_config = ConfigDict(extra="forbid")

    lease_token: str = Field(min_length=1, max_length=128)


class LeaseRenewal(BaseModel):
    """When the renewed lease runs out unless renewed again."""

    model_config = ConfigDict(extra="forbid")

    lease_expires_at: datetime


class LogRequest(LeaseRequest):
    """Lines for the run's log."""

    lines: list[LogLine] = Field(min_length=1, max_length=MAX_LOG_LINES)


class CompleteRequest(LeaseRequest):
    """The step succeeded; `result` is what it returned."""

    result: dict[str, Any] = Field(default_factory=dict)


class FailRequest(LeaseRequest):
    """The step failed; the message says why, for humans."""

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_LENGTH)
    # False: trying the step again cannot help (an unknown kind, bad parameters).
    retryable: bool = True
