"""`fabricate`: words to CAD variants, a human's pick, G-code, a print, and project memory.

1. `design`: one CAD job makes the variants, each sliced for the printer profile; their
   previews (and small STLs) are copied into the run. When more than one variant has
   G-code, they are the choices of the next gate (`approval_choices` of the result).
2. `choose`: waits for a human, who picks a variant; without a choice, the first.
3. `slice`: takes the chosen variant's G-code and estimate. The CAD service slices
   in the job that makes a part and has no separate slicing call, so this step
   checks that the G-code is there for the printer profile and records its estimate.
4. `print`: Home Assistant's `kitty.start_print` sends the part's G-code to the
   printer. Undone by `kitty.cancel_print` while the printer still has the job.
5. `watch`: follows the printer's state sensor until the job is complete; an error,
   a cancel or a lost printer fails the run. It gives up after twice the slicer's
   estimate and a margin, counted from the start of the print.
6. `record` (with `project`): a note in the project's memory, and links to the part,
   the print and the run.

The printer is named by its device id or by any entity of its device; planning finds
the device and its state sensor through Home Assistant, so a wrong name is refused
before anything is made.
"""

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
import json
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kittyai.cad_client import CadClient, CadJobTimeoutError, CadRequestError
from kittyai.client import KittyError
from kittyai.contract.cad import (
    MAX_PROMPT_LENGTH,
    MAX_VARIANTS,
    Artifact,
    FileKind,
    GenerateRequest,
    JobState,
    Material,
    ParameterValue,
)
from kittyai.contract.orchestrator import (
    ApprovalGate,
    ArtifactKind,
    RetryPolicy,
    RunErrorCode,
    StepSpec,
)
from kittyai.contract.rag import (
    NAME_PATTERN,
    ArtifactKind as LinkKind,
    ArtifactLinkRequest,
    NoteRequest,
)
from kittyai.orchestrator.engine import RunError
from kittyai.orchestrator.home_assistant import HomeAssistantClient, HomeAssistantError
from kittyai.orchestrator.templates.base import (
    APPROVAL_CHOICES,
    Peers,
    StepContext,
    StepExecutor,
    StepFailedError,
    peer,
    planned_params,
)
from kittyai.rag_client import RagClient, RagRequestError

DEFAULT_VARIANTS = 3
# A device id (`uuid4().hex`) or an entity id of one of the printer's entities.
PRINTER_PATTERN = r"^([0-9a-f]{32}|[a-z0-9_]+\.[a-z0-9_]+)$"
DOMAIN = "kitty"
NOTE_AUTHOR = "KITTY orchestrator"

# A cloud provider takes minutes per variant; the library a few seconds.
DESIGN_TIMEOUT_S = 1800.0
# What the step needs beyond waiting for the CAD job: fetching the variants' files.
DESIGN_MARGIN_S = 120.0
# Previews are copied always; STLs up to this size.
MAX_STL_COPY_BYTES = 5 * 1024 * 1024
# Uploading the G-code and starting the job: the printer answers within seconds.
PRINT_TIMEOUT_S = 600.0
# The watch ends by its own deadline; this only bounds a try the engine runs.
WATCH_TIMEOUT_S = 7 * 24 * 3600.0
WATCH_POLL_S = 2.0
WATCH_ESTIMATE_FACTOR = 2.0
# Heating, homing and the upload come on top of the slicer's estimate.
WATCH_MARGIN_S = 900.0

# The printer's states (`kittyai.printers.base.PrinterState`), as its state sensor shows them.
COMPLETE = "complete"
# A job holds the printer: it can be cancelled.
BUSY_STATES = frozenset({"printing", "pausing", "paused"})
# On its way to an end the next reading shows.
ENDING_STATES = frozenset({"cancelling"})
UNAVAILABLE = "unavailable"
# Home Assistant itself does not answer.
UNREACHABLE = "unreachable"
# Nobody can tell what the printer does; it may well print on.
UNKNOWN_STATES = frozenset({UNAVAILABLE, "unknown", UNREACHABLE})

_TIMES = " \N{MULTIPLICATION SIGN} "
_NETWORK_RETRY = RetryPolicy(attempts=3, backoff_s=5)

# Finds a KITTY printer's device and its state sensor: the sensor whose options are
# the printer states. `ref` is checked against PRINTER_PATTERN before it is put in.
_FIND_PRINTER = """
{%- set ref = REF -%}
{%- set device = device_id(ref) if "." in ref else (ref if device_attr(ref, "id") else none) -%}
{%- set kitty = integration_entities("kitty") -%}
{%- set ns = namespace(state=none) -%}
{%- for entity in (device_entities(device) if device else []) -%}
{%- set options = state_attr(entity, "options") or [] -%}
{%- if entity in kitty and entity.startswith("sensor.")
    and "complete" in options and "printing" in options -%}
{%- set ns.state = entity -%}
{%- endif -%}
{%- endfor -%}
{{ {"device_id": device, "state_entity": ns.state,
    "name": (device_attr(device, "name_by_user") or device_attr(device, "name")) if device else none
   } | to_json }}
"""


class FabricateParams(BaseModel):
    """What to make, how many ways, and where to print it."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PROMPT_LENGTH,
        description="What the part is, in words; the CAD service's model reads it.",
    )
    family: str | None = Field(
        default=None, min_length=1, max_length=64, description="A part family of the library."
    )
    parameters: dict[str, ParameterValue] = Field(
        default_factory=dict, description="The family's parameters, in mm."
    )
    variants: int = Field(
        default=DEFAULT_VARIANTS,
        ge=1,
        le=MAX_VARIANTS,
        description="How many variants to choose from; 3 with a description, else 1.",
    )
    printer: str = Field(
        pattern=PRINTER_PATTERN,
        description="The KITTY printer: its device id, or an entity of it (its state sensor).",
    )
    printer_profile: str | None = Field(
        default=None, description="The CAD service's printer profile; unset, its default."
    )
    material: Material = Material.PLA
    project: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="Record the part and print in it."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_variants(cls, data: Any) -> Any:
        # Variants are readings of the words: a part given by parameters alone has one.
        if isinstance(data, dict) and "variants" not in data and data.get("description") is None:
            return {**data, "variants": 1}
        return data

    @model_validator(mode="after")
    def _says_what_to_make(self) -> Self:
        if self.description is None and self.family is None:
            raise ValueError("give a description or a family")
        if self.parameters and self.family is None:
            raise ValueError("parameters need a family")
        if self.variants > 1 and self.description is None:
            raise ValueError("more than one variant needs a description to read in different ways")
        return self

    @property
    def what(self) -> str:
        """Return the part in a few words, for step titles."""
        if self.description is not None:
            return _shortened(self.description)
        return f"a {self.family}"

    def generate_request(self) -> GenerateRequest:
        """Return the CAD request that makes the variants, each sliced."""
        return GenerateRequest(
            prompt=self.description,
            family=self.family,
            parameters=self.parameters,
            variants=self.variants,
            printer=self.printer_profile,
            material=self.material,
            slice=True,
        )


class Printer(BaseModel):
    """A KITTY printer as Home Assistant knows it; read from the params of the steps that use it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    device_id: str
    name: str
    state_entity: str


class FabricateTemplate:
    """Designs a part in variants, prints the one a human picks, and remembers it."""

    name: ClassVar[str] = "fabricate"
    title: ClassVar[str] = "Design, pick, slice and print a part"
    params_model: ClassVar[type[BaseModel]] = FabricateParams

    async def plan(self, params: BaseModel, peers: Peers) -> list[StepSpec]:
        """Plan the six steps (five without a project); refuse a missing peer or printer."""
        params = planned_params(self.name, params, FabricateParams)
        if peers.cad is None:
            raise RunError(
                RunErrorCode.TEMPLATE_UNAVAILABLE,
                "fabricate needs the CAD service: set the orchestrator's cad url and token",
            )
        if peers.home_assistant is None:
            raise RunError(
                RunErrorCode.TEMPLATE_UNAVAILABLE,
                "fabricate prints through Home Assistant, which the orchestrator cannot reach",
            )
        if params.project is not None and peers.knowledge is None:
            raise RunError(
                RunErrorCode.TEMPLATE_UNAVAILABLE,
                "project needs the knowledge service: set the orchestrator's knowledge url"
                " and token",
            )
        printer = await find_printer(peers.home_assistant, params.printer)
        return fabricate_steps(params, printer)

    @property
    def executors(self) -> Mapping[str, StepExecutor]:
        """Executors of the design, choice, slice, print, watch and record steps, and cancel."""
        return {
            "cad.generate": design,
            "cad.choose": choose,
            "cad.slice": take_gcode,
            "printer.start": start_print,
            "printer.cancel": cancel_print,
            "printer.watch": watch_print,
            "knowledge.record": record,
        }


def fabricate_steps(params: FabricateParams, printer: Printer) -> list[StepSpec]:
    """Return the steps of a run making `params`' part on `printer`."""
    on_printer = printer.model_dump()
    if params.variants > 1:
        gate = f"Pick one of the {params.variants} variants of {params.what}"
    else:
        gate = f"Approve {params.what}"
    gate += f" to print on {printer.name}"
    steps = [
        StepSpec(
            name="design",
            kind="cad.generate",
            title=f"Design {params.variants} variant(s) of {params.what}",
            params={"request": params.generate_request().model_dump(mode="json")},
            retry=RetryPolicy(attempts=2, backoff_s=10),
            timeout_s=DESIGN_TIMEOUT_S,
        ),
        StepSpec(
            name="choose",
            kind="cad.choose",
            title="Pick the variant",
            approval=ApprovalGate(reason=gate),
            timeout_s=60,
        ),
        StepSpec(
            name="slice",
            kind="cad.slice",
            title="Take the chosen variant's G-code and estimate",
            params={"printer_profile": params.printer_profile},
            retry=_NETWORK_RETRY,
            timeout_s=300,
        ),
        StepSpec(
            name="print",
            kind="printer.start",
            title=f"Start the print on {printer.name}",
            params=on_printer,
            # One try: a start whose answer was lost may have started the job.
            timeout_s=PRINT_TIMEOUT_S,
            compensation="printer.cancel",
        ),
        StepSpec(
            name="watch",
            kind="printer.watch",
            title=f"Watch {printer.name} until the part is printed",
            params={**on_printer, "project": params.project},
            timeout_s=WATCH_TIMEOUT_S,
        ),
    ]
    if params.project is not None:
        steps.append(
            StepSpec(
                name="record",
                kind="knowledge.record",
                title=f"Record the part and the print in project {params.project}",
                params={"project": params.project, "printer": printer.name},
                retry=_NETWORK_RETRY,
                timeout_s=120,
            )
        )
    return steps


async def find_printer(home_assistant: HomeAssistantClient, ref: str) -> Printer:
    """Return the KITTY printer `ref` names (its device id or one of its entities).

    Raises:
        RunError: INVALID_PARAMS when it names no KITTY printer; TEMPLATE_UNAVAILABLE
            when Home Assistant cannot be asked.
    """
    template = _FIND_PRINTER.replace("REF", json.dumps(ref))
    try:
        found = json.loads(await home_assistant.render_template(template))
    except HomeAssistantError as err:
        raise RunError(
            RunErrorCode.TEMPLATE_UNAVAILABLE, f"cannot look up the printer {ref}: {err}"
        ) from None
    except ValueError:
        raise RunError(
            RunErrorCode.TEMPLATE_UNAVAILABLE,
            f"Home Assistant's answer about the printer {ref} is not JSON",
        ) from None
    if not found.get("device_id") or not found.get("state_entity"):
        raise RunError(
            RunErrorCode.INVALID_PARAMS,
            f"printer: {ref} is not a KITTY printer (give its device id or one of its entities)",
        )
    return Printer(
        device_id=found["device_id"],
        name=found.get("name") or found["device_id"],
        state_entity=found["state_entity"],
    )


# Step 1: design.


async def design(ctx: StepContext) -> dict[str, Any]:
    """Make the variants in one CAD job; copy their previews; offer the sliced ones."""
    cad = _cad(ctx)
    request = GenerateRequest.model_validate(
        {**ctx.step.params["request"], "conversation_id": ctx.run_id}
    )
    with _cad_errors("design the part"):
        job = await cad.generate(request)
        await ctx.log(f"CAD job {job.id}: {request.variants} variant(s)")
        job = await cad.wait(job.id, max(1.0, ctx.step.timeout_s - DESIGN_MARGIN_S))
    if job.state is JobState.FAILED:
        raise StepFailedError(f"the CAD service could not make the part: {job.error}")
    variants = []
    for result in job.variants:
        if result.artifact_id is None:
            await ctx.log(f"variant {result.variant + 1} failed: {result.error}")
            continue
        with _cad_errors("fetch a variant"):
            artifact = await cad.artifact(result.artifact_id)
            summary = await _keep_variant(ctx, cad, artifact)
        summary["slice_error"] = result.error
        variants.append(summary)
        await ctx.log(_describe_variant(summary))
    printable = [summary["artifact_id"] for summary in variants if summary["sliced"]]
    if not printable:
        problems = "; ".join(
            f"variant {summary['number']}: {summary['slice_error'] or 'no G-code'}"
            for summary in variants
        )
        raise StepFailedError(f"no variant could be sliced ({problems})", retryable=False)
    designed: dict[str, Any] = {"job_id": job.id, "variants": variants, "printable": printable}
    # One part leaves nothing to pick: the human only approves it.
    if len(printable) > 1:
        designed[APPROVAL_CHOICES] = printable
    return designed


async def _keep_variant(ctx: StepContext, cad: CadClient, artifact: Artifact) -> dict[str, Any]:
    """Copy a variant's preview (and its STL when small) into the run; return its summary."""
    number = artifact.variant + 1
    files = {file.kind: file for file in artifact.files}
    preview = None
    if (png := files.get(FileKind.PREVIEW)) is not None:
        kept = await ctx.artifacts.write(
            f"variant-{number}-preview.png",
            await cad.file(artifact.id, png.name),
            kind=ArtifactKind.CAD,
            media_type="image/png",
        )
        preview = kept.id
    if (stl := files.get(FileKind.STL)) is not None and stl.size <= MAX_STL_COPY_BYTES:
        await ctx.artifacts.write(
            f"variant-{number}.stl",
            await cad.file(artifact.id, stl.name),
            kind=ArtifactKind.CAD,
            media_type="model/stl",
        )
    estimate = artifact.slice
    return {
        "artifact_id": artifact.id,
        "number": number,
        "provider": artifact.provider.value,
        "family": artifact.family,
        "parameters": artifact.parameters,
        "bbox_mm": list(artifact.metrics.bbox_mm),
        "volume_mm3": artifact.metrics.volume_mm3,
        "mass_g": artifact.metrics.mass_g,
        "printer_profile": artifact.printer,
        "material": artifact.material.value,
        "sliced": estimate is not None and FileKind.GCODE in files,
        "print_time_s": estimate.print_time_s if estimate is not None else None,
        "filament_g": estimate.filament_g if estimate is not None else None,
        "preview": preview,
    }


def _describe_variant(summary: Mapping[str, Any]) -> str:
    size = _TIMES.join(f"{extent:g}" for extent in summary["bbox_mm"])
    text = f"variant {summary['number']} ({summary['artifact_id']}): {size} mm"
    if summary["family"]:
        text += f", {summary['family']} {json.dumps(summary['parameters'], sort_keys=True)}"
    if summary["sliced"]:
        minutes = summary["print_time_s"] / 60
        return f"{text}, about {minutes:.0f} min and {summary['filament_g']:.1f} g"
    return f"{text}, not sliced: {summary['slice_error'] or 'no G-code'}"


# Step 2: choose.


async def choose(ctx: StepContext) -> dict[str, Any]:
    """Return the variant the approver picked, or the first one when they picked none."""
    designed = ctx.results["design"]
    offered: list[str] = list(designed["printable"])
    choice = ctx.choice if ctx.choice is not None else offered[0]
    if choice not in offered:
        raise StepFailedError(
            f"{choice} is not one of the variants: {', '.join(offered)}", retryable=False
        )
    summary = next(item for item in designed["variants"] if item["artifact_id"] == choice)
    await ctx.log(f"chosen: {_describe_variant(summary)}")
    return {"artifact_id": choice, "number": summary["number"], "picked": ctx.choice is not None}


# Step 3: slice.


async def take_gcode(ctx: StepContext) -> dict[str, Any]:
    """Check the chosen variant's G-code for the printer profile; record its estimate."""
    cad = _cad(ctx)
    chosen = ctx.results["choose"]["artifact_id"]
    with _cad_errors("read the chosen variant"):
        artifact = await cad.artifact(chosen)
    gcode = next((file for file in artifact.files if file.kind is FileKind.GCODE), None)
    if artifact.slice is None or gcode is None:
        raise StepFailedError(f"part {chosen} has no G-code", retryable=False)
    profile = ctx.step.params.get("printer_profile")
    if profile is not None and artifact.slice.printer != profile:
        raise StepFailedError(
            f"part {chosen} was sliced for {artifact.slice.printer}, not {profile}",
            retryable=False,
        )
    sliced = {
        "artifact_id": artifact.id,
        "gcode": gcode.name,
        "gcode_size": gcode.size,
        "gcode_sha256": gcode.sha256,
        **artifact.slice.model_dump(mode="json"),
    }
    await ctx.artifacts.write(
        "slice.json",
        json.dumps(sliced, indent=2).encode(),
        kind=ArtifactKind.CAD,
        media_type="application/json",
    )
    await ctx.log(
        f"{gcode.name} of part {chosen}: about {artifact.slice.print_time_s / 60:.0f} min"
        f" and {artifact.slice.filament_g:.1f} g of {artifact.slice.material.value.upper()}"
        f" on {artifact.slice.printer} ({artifact.slice.slicer})"
    )
    return sliced


# Step 4: print, and its undoing.


async def start_print(ctx: StepContext) -> dict[str, Any]:
    """Have Home Assistant send the chosen part's G-code to the printer and start it."""
    home_assistant = _home_assistant(ctx)
    printer = Printer.model_validate(ctx.step.params)
    artifact_id = ctx.results["slice"]["artifact_id"]
    started_at = datetime.now(UTC)
    try:
        await home_assistant.call_service(
            DOMAIN, "start_print", {"device_id": printer.device_id, "artifact_id": artifact_id}
        )
    except HomeAssistantError as err:
        # The call may have reached the printer: trying again could start a second job.
        raise StepFailedError(
            f"{printer.name} did not start the print: {err}", retryable=False
        ) from None
    # The job runs from here on: nothing after the start may fail the step uncompensated.
    state, _message = await _printer_state(home_assistant, printer)
    await ctx.log(f"{printer.name} is {state}")
    return {
        **printer.model_dump(),
        "artifact_id": artifact_id,
        # The name KITTY's integration gives a part's G-code on the print server.
        "file": f"kitty-{artifact_id}.gcode",
        "started_at": started_at.isoformat(),
    }


async def cancel_print(ctx: StepContext) -> dict[str, Any]:
    """Cancel the job the print step started, if the printer still has one."""
    home_assistant = _home_assistant(ctx)
    printer = Printer.model_validate(ctx.step.params)
    state, _message = await _printer_state(home_assistant, printer)
    if state in UNKNOWN_STATES:
        raise StepFailedError(f"cannot tell whether {printer.name} still prints: it is {state}")
    if state not in BUSY_STATES:
        await ctx.log(f"nothing to cancel: {printer.name} is {state}")
        return {"cancelled": False}
    try:
        await home_assistant.call_service(DOMAIN, "cancel_print", {"device_id": printer.device_id})
    except HomeAssistantError as err:
        after, _message = await _printer_state(home_assistant, printer)
        # Refused because the job ended meanwhile: there is nothing left to undo.
        if after not in BUSY_STATES | ENDING_STATES | UNKNOWN_STATES:
            await ctx.log(f"nothing to cancel: {printer.name} is {after}")
            return {"cancelled": False}
        raise StepFailedError(f"{printer.name} did not cancel the print: {err}") from None
    await ctx.log(f"print on {printer.name} cancelled")
    return {"cancelled": True}


# Step 5: watch.


async def watch_print(ctx: StepContext) -> dict[str, Any]:
    """Follow the printer's state until the job is complete; fail when it ends otherwise."""
    home_assistant = _home_assistant(ctx)
    printer = Printer.model_validate(ctx.step.params)
    estimate_s = float(ctx.results["slice"]["print_time_s"])
    started = datetime.fromisoformat(ctx.results["print"]["started_at"])
    allowed = timedelta(seconds=estimate_s * WATCH_ESTIMATE_FACTOR + WATCH_MARGIN_S)
    seen: str | None = None
    while True:
        state, reason = await _printer_state(home_assistant, printer)
        if state != seen:
            await ctx.log(f"{printer.name}: {state}")
            seen = state
        now = datetime.now(UTC)
        if state == COMPLETE:
            return {
                "state": state,
                "finished_at": now.isoformat(),
                "duration_s": round((now - started).total_seconds(), 1),
            }
        if state in BUSY_STATES | ENDING_STATES | UNKNOWN_STATES:
            failure = None
        else:
            # Error, cancelled, disconnected, or idle: the job is gone unfinished.
            failure = f"the print on {printer.name} ended {state}: {reason or state}"
        if failure is None and now >= started + allowed:
            failure = (
                f"the print on {printer.name} has not finished after"
                f" {allowed.total_seconds() / 60:.0f} min (estimate {estimate_s / 60:.0f} min)"
            )
        if failure is not None:
            await _note_failed_print(ctx, failure)
            raise StepFailedError(failure, retryable=False)
        await asyncio.sleep(WATCH_POLL_S)


async def _note_failed_print(ctx: StepContext, message: str) -> None:
    """Tell the project a print failed; the record step, after the watch, will not run."""
    project = ctx.step.params.get("project")
    if project is None or ctx.peers.knowledge is None:
        return
    chosen = ctx.results["choose"]
    text = (
        f"Print failed (run {ctx.run_id}): variant {chosen['number']},"
        f" part {chosen['artifact_id']}: {message}."
    )
    try:
        await ctx.peers.knowledge.add_note(project, NoteRequest(text=text, author=NOTE_AUTHOR))
    except KittyError as err:
        # The failure itself is what the run reports; the note is a courtesy.
        await ctx.log(f"could not note the failure in project {project}: {err}")


# Step 6: record.


async def record(ctx: StepContext) -> dict[str, Any]:
    """Note what was made and printed in the project, and link the part, print and run."""
    knowledge = peer(ctx.peers.knowledge, "the knowledge service is not configured")
    project = str(ctx.step.params["project"])
    printer = str(ctx.step.params["printer"])
    designed, chosen = ctx.results["design"], ctx.results["choose"]
    printed, watched = ctx.results["print"], ctx.results["watch"]
    summary = next(v for v in designed["variants"] if v["artifact_id"] == chosen["artifact_id"])
    try:
        if not await _noted(knowledge, project, ctx.run_id):
            await knowledge.add_note(
                project,
                NoteRequest(
                    text=_print_note(ctx, summary, len(designed["variants"]), printer),
                    author=NOTE_AUTHOR,
                ),
            )
        links = [
            ArtifactLinkRequest(
                kind=LinkKind.CAD,
                ref=chosen["artifact_id"],
                title=_describe_variant(summary)[:200],
            ),
            ArtifactLinkRequest(
                kind=LinkKind.PRINT,
                ref=f"{printed['device_id']}/{printed['file']}",
                title=f"{printed['file']} on {printer}: {watched['state']}"[:200],
            ),
            ArtifactLinkRequest(
                kind=LinkKind.RUN, ref=ctx.run_id, title=f"fabricate run {ctx.run_id}"
            ),
        ]
        for link in links:
            await knowledge.link_artifact(project, link)
    except KittyError as err:
        raise StepFailedError(f"could not record in project {project}: {err}") from None
    await ctx.log(f"recorded in project {project}")
    return {"project": project, "links": [link.model_dump(mode="json") for link in links]}


async def _noted(knowledge: RagClient, project: str, run_id: str) -> bool:
    """Return whether the project has this run's note: a try cut after it must not add another."""
    try:
        detail = await knowledge.project(project)
    except RagRequestError as err:
        if err.status == HTTPStatus.NOT_FOUND:
            return False
        raise
    return any(note.text.startswith(_printed_heading(run_id)) for note in detail.notes)


def _printed_heading(run_id: str) -> str:
    """Return how the note of a run's printed part starts: one such note per run."""
    return f"Printed (run {run_id}):"


def _print_note(ctx: StepContext, summary: Mapping[str, Any], variants: int, printer: str) -> str:
    sliced, watched = ctx.results["slice"], ctx.results["watch"]
    size = _TIMES.join(f"{extent:g}" for extent in summary["bbox_mm"])
    if summary["family"]:
        made = f"{summary['family']} {json.dumps(summary['parameters'], sort_keys=True)}"
    else:
        made = f"a {summary['provider']} part"
    return (
        f"{_printed_heading(ctx.run_id)} {ctx.params.get('description') or made}."
        f" Variant {summary['number']} of {variants}, part {summary['artifact_id']}:"
        f" {made}, {size} mm,"
        f" {summary['volume_mm3']:.0f} mm³."
        f" {sliced['material'].upper()} on {printer} (profile {sliced['printer']}):"
        f" estimated {sliced['print_time_s'] / 60:.0f} min and {sliced['filament_g']:.1f} g,"
        f" {watched['state']} after {watched['duration_s'] / 60:.0f} min."
    )


# Helpers.


def _cad(ctx: StepContext) -> CadClient:
    return peer(ctx.peers.cad, "the CAD service is not configured")


def _home_assistant(ctx: StepContext) -> HomeAssistantClient:
    return peer(ctx.peers.home_assistant, "Home Assistant is not configured")


@contextmanager
def _cad_errors(doing: str) -> Iterator[None]:
    """Turn the CAD client's errors into a failed try: a refusal is final, an outage is not."""
    try:
        yield
    except CadRequestError as err:
        raise StepFailedError(
            f"the CAD service refused to {doing}: {err}", retryable=False
        ) from None
    except CadJobTimeoutError as err:
        raise StepFailedError(str(err), retryable=False) from None
    except KittyError as err:
        raise StepFailedError(f"could not {doing}: {err}") from None


async def _printer_state(
    home_assistant: HomeAssistantClient, printer: Printer
) -> tuple[str, str | None]:
    """Return the printer's state sensor's state, and the print server's words for it."""
    try:
        state = await home_assistant.get_state(printer.state_entity)
    except HomeAssistantError:
        return UNREACHABLE, None
    if state is None:
        return UNAVAILABLE, None
    message = state.attributes.get("message")
    return state.state, message if isinstance(message, str) else None


def _shortened(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
