"""What a template is: parameters, an action plan, and the executors of its step kinds."""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import aiohttp
from pydantic import BaseModel

from kittyai.cad_client import CadClient
from kittyai.contract.orchestrator import ArtifactInfo, ArtifactKind, StepInfo, StepSpec
from kittyai.orchestrator.home_assistant import HomeAssistantClient
from kittyai.orchestrator.options import Policies
from kittyai.rag_client import RagClient
from kittyai.supervisor import SupervisorClient

# A step result's list under this key becomes the choices of the next approval gate,
# for choices known only once the run is under way (the CAD variants of `fabricate`).
APPROVAL_CHOICES = "approval_choices"


class StepFailedError(Exception):
    """A step did not do what it should; the message says why, for humans."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        """Fail the try; `retryable` False skips the tries left (e.g. a failed check)."""
        super().__init__(message)
        self.retryable = retryable


def planned_params[P: BaseModel](template: str, params: BaseModel, model: type[P]) -> P:
    """Return `params` as the template's `model`; the engine validated them with it."""
    if not isinstance(params, model):
        raise TypeError(f"{template} plans {model.__name__}, not {type(params).__name__}")
    return params


def peer[T](configured: T | None, missing: str) -> T:
    """Return a peer a step needs; fail the step for good, saying `missing`, without it."""
    if configured is None:
        raise StepFailedError(missing, retryable=False)
    return configured


@dataclass(frozen=True, slots=True, kw_only=True)
class Peers:
    """What templates act on; None where it is not configured."""

    session: aiohttp.ClientSession
    supervisor: SupervisorClient | None
    home_assistant: HomeAssistantClient | None
    # Home Assistant's configuration folder, as this process sees it.
    config_dir: Path
    cad: CadClient | None
    knowledge: RagClient | None
    policies: Policies


class ArtifactSink(Protocol):
    """Where a step keeps its files: under its run's folder, indexed."""

    async def write(
        self, name: str, data: bytes, *, kind: ArtifactKind, media_type: str
    ) -> ArtifactInfo:
        """Store `data` as an artifact of the step running now."""

    async def read(self, artifact_id: str) -> bytes:
        """Return the bytes of an artifact of this run."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepContext:
    """What a step executor works with."""

    run_id: str
    template: str
    # The run's validated parameters, as JSON.
    params: Mapping[str, Any]
    step: StepInfo
    # 1 for the first try.
    attempt: int
    # The results of the steps that succeeded before this one, by step name.
    results: Mapping[str, Mapping[str, Any]]
    # What the approver picked at the last gate, if it offered choices.
    choice: str | None
    peers: Peers
    artifacts: ArtifactSink
    # Appends a line to the run's log (an SSE and MQTT event, and the run's log artifact).
    log: Callable[[str], Awaitable[None]]


# Returns the step's result (JSON); raises StepFailedError when the step failed.
type StepExecutor = Callable[[StepContext], Awaitable[dict[str, Any]]]


class Template(Protocol):
    """A named kind of run."""

    name: ClassVar[str]
    title: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]

    async def plan(self, params: BaseModel, peers: Peers) -> list[StepSpec]:
        """Return the action plan; raise RunError to refuse (bad path, patch that won't apply)."""

    @property
    def executors(self) -> Mapping[str, StepExecutor]:
        """Executors of the step and compensation kinds this orchestrator runs itself."""
