"""The step kinds a worker runs, and what each needs installed.

- `noop`: sleeps `params.seconds` and reports what ran; `params.fail` makes it fail
  (the orchestrator's drill template sends both).
- `cad.part`: builds a part of KITTY's part library (`params.family`,
  `params.parameters`) with CadQuery and returns its volume, extents and mass.
  A worker that advertises the `cad` capability without CadQuery refuses to start.
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
import importlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kittyai.contract.cad import ParameterValue
from kittyai.validation import describe_errors
from kittyai.worker.protocol import WorkItem

NOOP_KIND = "noop"
CAD_PART_KIND = "cad.part"
CAD_CAPABILITY = "cad"
# PLA, the material most parts are printed in.
DEFAULT_DENSITY_G_CM3 = 1.24


class WorkFailedError(Exception):
    """The step failed; the message says why, for humans."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        """Fail the step; `retryable` False when trying again cannot help."""
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class CapabilityError(Exception):
    """A capability is advertised that this machine cannot serve."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkContext:
    """What a step kind works with."""

    item: WorkItem
    node_id: str
    # Appends a line to the run's log.
    log: Callable[[str], Awaitable[None]]


# Returns the step's result (JSON); raises WorkFailedError when the step failed.
type StepKind = Callable[[WorkContext], Awaitable[dict[str, Any]]]


def _params[ModelT: BaseModel](model: type[ModelT], ctx: WorkContext) -> ModelT:
    try:
        return model.model_validate(ctx.item.params)
    except ValidationError as err:
        raise WorkFailedError(
            f"bad parameters for a {ctx.item.kind} step: {describe_errors(err)}", retryable=False
        ) from None


class NoopParams(BaseModel):
    """Parameters of a `noop` step."""

    # The orchestrator's drill adds what it needs for itself (e.g. its step number).
    model_config = ConfigDict(extra="ignore")

    seconds: float = Field(default=0.0, ge=0, le=3600)
    fail: bool = False


async def run_noop(ctx: WorkContext) -> dict[str, Any]:
    """Sleep, or fail when asked to; report what ran and where."""
    params = _params(NoopParams, ctx)
    if params.fail:
        raise WorkFailedError(f"Drill: step {ctx.item.step_name} fails as asked", retryable=False)
    await asyncio.sleep(params.seconds)
    await ctx.log(
        f"drill step {ctx.item.step_name} ran on node {ctx.node_id} (try {ctx.item.attempt})"
    )
    return {
        "step": ctx.item.step,
        "attempt": ctx.item.attempt,
        "seconds": params.seconds,
        "choice": ctx.item.choice,
        "node": ctx.node_id,
    }


class CadPartParams(BaseModel):
    """Parameters of a `cad.part` step."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(min_length=1, description="A part family, e.g. `spacer`.")
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)
    density_g_cm3: float = Field(default=DEFAULT_DENSITY_G_CM3, gt=0, le=25)


async def run_cad_part(ctx: WorkContext) -> dict[str, Any]:
    """Build the part off the event loop and return how it measures."""
    params = _params(CadPartParams, ctx)
    await ctx.log(f"building a {params.family} on node {ctx.node_id}")
    result = await asyncio.to_thread(_build_part, params)
    await ctx.log(
        f"{params.family}: {result['volume_mm3']:g} mm³,"
        f" {' x '.join(f'{extent:g}' for extent in result['bbox_mm'])} mm"
    )
    return result


def _build_part(params: CadPartParams) -> dict[str, Any]:
    # Imported here: CadQuery takes seconds to load, and only `cad` workers have it.
    from kittyai.cad.families import (  # noqa: PLC0415
        MAX_LENGTH_MM,
        UnknownFamilyError,
        family_named,
        parse_parameters,
    )
    from kittyai.cad.geometry import GeometryError, check_part, measure  # noqa: PLC0415

    try:
        family = family_named(params.family)
        parameters = parse_parameters(params.family, params.parameters)
    except UnknownFamilyError as err:
        raise WorkFailedError(str(err), retryable=False) from None
    except ValidationError as err:
        raise WorkFailedError(
            f"bad parameters for a {params.family}: {describe_errors(err)}", retryable=False
        ) from None
    try:
        # The printer is the slicing step's business; here only the library's limits apply.
        shape = check_part(
            family.build(parameters), (MAX_LENGTH_MM,) * 3, max_solids=family.max_solids
        )
    except GeometryError as err:
        raise WorkFailedError(
            f"the {params.family} is not printable: {err}", retryable=False
        ) from None
    metrics = measure(shape, params.density_g_cm3)
    return {
        "family": params.family,
        "parameters": parameters.model_dump(mode="json"),
        **metrics.model_dump(mode="json"),
    }


KINDS: Mapping[str, StepKind] = {NOOP_KIND: run_noop, CAD_PART_KIND: run_cad_part}


async def check_capabilities(capabilities: list[str]) -> None:
    """Refuse capabilities this machine cannot serve: `cad` needs CadQuery.

    Raises:
        CapabilityError: What is missing and how to fix it.
    """
    if CAD_CAPABILITY not in capabilities:
        return
    try:
        # Loading it now also proves its compiled kernel works on this machine.
        await asyncio.to_thread(importlib.import_module, "cadquery")
    except ImportError as err:
        raise CapabilityError(
            f"the capability {CAD_CAPABILITY!r} needs CadQuery, which cannot be loaded here"
            f" ({err}): install kittyai[cad], or remove {CAD_CAPABILITY!r} from capabilities"
        ) from None
