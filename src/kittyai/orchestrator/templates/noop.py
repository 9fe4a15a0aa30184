"""`noop`: the drill template, steps that only wait, to rehearse approvals, rollback and workers.

Each step sleeps `seconds` and reports what ran; with `capability` a worker with it
runs the steps instead. `approval` puts a gate before the first step (`choices`:
the approver picks one), and `fail_at` makes that step fail so the rollback can be
watched: every step has the compensation `noop.undo`.
"""

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kittyai.contract.orchestrator import CAPABILITY_PATTERN, ApprovalGate, StepSpec
from kittyai.orchestrator.templates.base import (
    Peers,
    StepContext,
    StepExecutor,
    StepFailedError,
)

STEP_KIND = "noop"
UNDO_KIND = "noop.undo"
GATE_REASON = "Drill: approve to go on"
# A step gets this long beyond its sleep before its try times out.
_TIMEOUT_MARGIN_S = 60.0


class NoopParams(BaseModel):
    """Parameters of a drill run."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=5, ge=1, le=100, description="How many steps.")
    seconds: float = Field(default=0.0, ge=0, le=3600, description="How long each step sleeps.")
    capability: str | None = Field(
        default=None, pattern=CAPABILITY_PATTERN, description="Run the steps on a worker with it."
    )
    approval: bool = Field(default=False, description="Wait for approval before the first step.")
    fail_at: int | None = Field(default=None, ge=1, description="This step (1-based) fails.")
    choices: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=20, description="The gate offers these."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.fail_at is not None and self.fail_at > self.steps:
            raise ValueError(f"fail_at must be at most steps ({self.steps})")
        if self.choices and not self.approval:
            raise ValueError("choices need approval: true")
        return self


class NoopTemplate:
    """Steps that sleep and report; a drill for everything around them."""

    name: ClassVar[str] = "noop"
    title: ClassVar[str] = "Drill: steps that only wait"
    params_model: ClassVar[type[BaseModel]] = NoopParams

    async def plan(self, params: BaseModel, peers: Peers) -> list[StepSpec]:
        """Return one sleeping step per `params.steps`."""
        params = NoopParams.model_validate(params, from_attributes=True)
        gate = ApprovalGate(reason=GATE_REASON, choices=params.choices) if params.approval else None
        return [
            StepSpec(
                name=f"step-{number}",
                kind=STEP_KIND,
                title=f"Drill step {number} of {params.steps}",
                params={
                    "number": number,
                    "seconds": params.seconds,
                    "fail": number == params.fail_at,
                },
                timeout_s=params.seconds + _TIMEOUT_MARGIN_S,
                compensation=UNDO_KIND,
                approval=gate if number == 1 else None,
                capability=params.capability,
            )
            for number in range(1, params.steps + 1)
        ]

    @property
    def executors(self) -> Mapping[str, StepExecutor]:
        """Executors of `noop` and `noop.undo`."""
        return {STEP_KIND: run_noop_step, UNDO_KIND: undo_noop_step}


async def run_noop_step(ctx: StepContext) -> dict[str, Any]:
    """Sleep the step's `seconds`, or fail when it is the `fail_at` step; report what ran."""
    number = int(ctx.step.params["number"])
    seconds = float(ctx.step.params["seconds"])
    if ctx.step.params.get("fail"):
        raise StepFailedError(f"Drill: step {number} fails as asked", retryable=False)
    await asyncio.sleep(seconds)
    await ctx.log(f"drill step {number} ran (try {ctx.attempt})")
    return {
        "step": ctx.step.index,
        "attempt": ctx.attempt,
        "seconds": seconds,
        "choice": ctx.choice,
    }


async def undo_noop_step(ctx: StepContext) -> dict[str, Any]:
    """Undo a drill step: nothing to do but say so."""
    await ctx.log(f"drill step {ctx.step.params['number']} undone")
    return {"undone": ctx.step.index}
