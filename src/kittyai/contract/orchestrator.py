"""What the orchestrator and its clients exchange: runs, steps, approvals, artifacts, nodes.

The same models are the bodies of the orchestrator's REST API, the payloads of
its MQTT topics and the events of its SSE stream.
"""

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Run ids, template names, step names and node ids: short, safe in paths and topics.
ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
# What a worker can do: `cad`, `slice`, `gpu`, `print:<printer>`.
CAPABILITY_PATTERN = r"^[a-z0-9][a-z0-9_.:-]{0,63}$"


class RunState(StrEnum):
    """Where a run is."""

    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Return whether the run has ended (it may still be retried)."""
        return self in FINISHED_RUN_STATES


FINISHED_RUN_STATES = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.ROLLED_BACK, RunState.CANCELLED}
)


class StepState(StrEnum):
    """Where one step of a run is."""

    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Undone by its compensation during a rollback.
    COMPENSATED = "compensated"
    # Never ran: the run ended before reaching it.
    SKIPPED = "skipped"


class RetryPolicy(BaseModel):
    """How often a step is tried and how long to wait between tries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=1, ge=1, le=20, description="Tries in all, the first included.")
    backoff_s: float = Field(default=2.0, ge=0, le=3600, description="Wait before the 2nd try.")
    backoff_factor: float = Field(default=2.0, ge=1, le=10, description="Growth of the wait.")

    def delay_before(self, attempt: int) -> float:
        """Return the wait before try number `attempt` (1-based; 0 before the first)."""
        if attempt <= 1:
            return 0.0
        return self.backoff_s * self.backoff_factor ** (attempt - 2)


class ApprovalGate(BaseModel):
    """A step that waits for a human before it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(min_length=1, description="Why approval is needed, shown to the human.")
    # When set, the approver must pick one (e.g. a CAD variant).
    choices: list[str] = Field(default_factory=list)


class StepSpec(BaseModel):
    """One step of a run's action plan, as its template wrote it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=ID_PATTERN, description="Unique within the run, e.g. `backup`.")
    kind: str = Field(min_length=1, description="What executes it, e.g. `supervisor.backup`.")
    title: str = Field(min_length=1, description="What it does, for humans.")
    params: dict[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_s: float = Field(default=300.0, gt=0, le=7 * 24 * 3600)
    # The kind that undoes this step during a rollback; it gets the same params.
    compensation: str | None = None
    approval: ApprovalGate | None = None
    # Set: a worker with this capability runs the step (`cad`, `slice`, `print:<printer>`).
    capability: str | None = None


class StepInfo(StepSpec):
    """One step of a run and what happened to it."""

    index: int = Field(ge=0)
    state: StepState = StepState.PENDING
    attempts: int = Field(default=0, ge=0)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None
    # What the step returned: data for the steps after it and for humans.
    result: dict[str, Any] | None = None
    artifacts: list[str] = Field(default_factory=list, description="Artifact ids.")
    # The worker that ran it, for steps with a capability.
    node: str | None = None


class Decision(StrEnum):
    """What a human said at an approval gate."""

    APPROVE = "approve"
    REJECT = "reject"


class Approval(BaseModel):
    """A recorded decision at an approval gate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: int = Field(ge=0)
    decision: Decision
    approver: str
    reason: str | None = None
    choice: str | None = None
    at: datetime


class RunInfo(BaseModel):
    """A run: its template and parameters, its plan and where it is."""

    model_config = ConfigDict(extra="forbid")

    id: str
    template: str
    params: dict[str, Any]
    state: RunState
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    requested_by: str | None = None
    idempotency_key: str | None = None
    # The step waiting for approval, while the run is `awaiting_approval`.
    awaiting_step: int | None = None
    message: str | None = None
    steps: list[StepInfo]
    approvals: list[Approval] = Field(default_factory=list)


class RunList(BaseModel):
    """A page of runs, newest first."""

    model_config = ConfigDict(extra="forbid")

    runs: list[RunInfo]
    total: int
    # Pass as `offset` for the next page; None on the last page.
    next_offset: int | None = None


class ArtifactKind(StrEnum):
    """What an artifact is."""

    DIFF = "diff"
    LOG = "log"
    ROLLBACK_LOG = "rollback_log"
    BACKUP = "backup"
    CAD = "cad"
    SNAPSHOT = "snapshot"
    FILE = "file"


class ArtifactInfo(BaseModel):
    """A file a run produced, kept under the run's folder."""

    model_config = ConfigDict(extra="forbid")

    id: str
    run_id: str
    step: int | None = None
    name: str
    kind: ArtifactKind
    media_type: str
    size: int = Field(ge=0)
    sha256: str
    created_at: datetime
    # False once the retention policy removed the file; the record stays.
    available: bool = True


class ArtifactList(BaseModel):
    """The artifacts of one run, oldest first."""

    model_config = ConfigDict(extra="forbid")

    artifacts: list[ArtifactInfo]


class RunEventType(StrEnum):
    """What a run event reports."""

    RUN = "run"
    STEP = "step"
    LOG = "log"


class RunEvent(BaseModel):
    """One change of a run: its state, one step's state, or a log line."""

    model_config = ConfigDict(extra="forbid", title="RunEvent")

    v: Literal[1] = 1
    # Increases by one per event over the whole orchestrator: the SSE event id.
    seq: int = Field(ge=1)
    run_id: str
    template: str
    type: RunEventType
    at: datetime
    state: RunState = Field(description="The run's state after this event.")
    step: int | None = None
    step_name: str | None = None
    step_state: StepState | None = None
    message: str | None = None
    correlation_id: str | None = None


class AwaitingRun(BaseModel):
    """A run waiting for a human, as the stats list it."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    template: str
    step: int
    title: str
    reason: str
    choices: list[str] = Field(default_factory=list)
    since: datetime


class RunResult(BaseModel):
    """How the last finished run ended."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    template: str
    state: RunState
    finished_at: datetime
    message: str | None = None


class RunStats(BaseModel):
    """Payload of `kitty/orchestrator/runs`: what the Home Assistant sensors show."""

    model_config = ConfigDict(extra="forbid", title="RunStats")

    v: Literal[1] = 1
    # Queued, running and awaiting approval.
    active: int = Field(ge=0)
    awaiting_approval: list[AwaitingRun] = Field(default_factory=list)
    last_result: RunResult | None = None
    total: int = Field(ge=0)


class NodeCapacity(BaseModel):
    """Payload of `kitty/nodes/<id>/capacity`: a worker's heartbeat, retained."""

    model_config = ConfigDict(extra="forbid", title="NodeCapacity")

    v: Literal[1] = 1
    node_id: str = Field(pattern=ID_PATTERN)
    # False in the last will and on a clean stop.
    online: bool
    capabilities: list[str] = Field(default_factory=list)
    max_jobs: int = Field(default=1, ge=0, le=1024)
    running_jobs: int = Field(default=0, ge=0)
    cpu_count: int = Field(default=1, ge=1)
    load_1m: float = Field(default=0.0, ge=0)
    memory_available_mb: float = Field(default=0.0, ge=0)
    at: datetime


class NodeInfo(NodeCapacity):
    """A worker as the orchestrator sees it (`GET /api/nodes`)."""

    last_seen: datetime
    # Steps it holds a lease on now.
    claimed: int = Field(default=0, ge=0)


class NodeList(BaseModel):
    """The workers the orchestrator knows."""

    model_config = ConfigDict(extra="forbid")

    nodes: list[NodeInfo]


class RunErrorCode(StrEnum):
    """Why the orchestrator refused a request: the `code` of its JSON error body."""

    UNKNOWN_TEMPLATE = "unknown_template"  # 422
    INVALID_PARAMS = "invalid_params"  # 422
    PATH_NOT_ALLOWED = "path_not_allowed"  # 422
    PATCH_DOES_NOT_APPLY = "patch_does_not_apply"  # 422
    TEMPLATE_UNAVAILABLE = "template_unavailable"  # 422: a peer it needs is not configured
    INVALID_CHOICE = "invalid_choice"  # 422
    RUN_NOT_FOUND = "run_not_found"  # 404
    ARTIFACT_NOT_FOUND = "artifact_not_found"  # 404
    NOT_AWAITING_APPROVAL = "not_awaiting_approval"  # 409
    CANNOT_RETRY = "cannot_retry"  # 409
    ALREADY_FINISHED = "already_finished"  # 409


class TemplateInfo(BaseModel):
    """A template runs can be created from."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: str
    # JSON Schema of `CreateRunRequest.params` for this template.
    params_schema: dict[str, Any]


class TemplateList(BaseModel):
    """The templates this orchestrator runs."""

    model_config = ConfigDict(extra="forbid")

    templates: list[TemplateInfo]


# Request bodies.


class CreateRunRequest(BaseModel):
    """`POST /api/runs`."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    # The same key returns the run it created first, whatever the params.
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128)
    requested_by: str | None = Field(default=None, max_length=128)


class ApprovalRequest(BaseModel):
    """`POST /api/runs/{id}/approvals`."""

    model_config = ConfigDict(extra="forbid")

    decision: Decision
    approver: str = Field(min_length=1, max_length=128)
    reason: str | None = Field(default=None, max_length=1000)
    choice: str | None = Field(default=None, max_length=128)


class RetryRequest(BaseModel):
    """`POST /api/runs/{id}/retry`."""

    model_config = ConfigDict(extra="forbid")

    # None: from the first step that did not succeed.
    from_step: int | str | None = Field(default=None, description="Step index or name.")


class CancelRequest(BaseModel):
    """`POST /api/runs/{id}/cancel`."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=1000)
