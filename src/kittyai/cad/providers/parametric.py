"""Parts from KITTY's own library of part families, filled in from parameters or by a model.

How a request becomes a part (`plan`):

- Parameters given, or no prompt: the family (the request's, else the parent's) is
  built from the parent's parameters overridden by the request's. No model is asked.
- A prompt and no parameters: the model is asked. It picks a family and its parameters
  ("a 20 mm spacer for M3"), fills in the family the request names, or, for a child of
  a family part ("make it 5 mm taller"), changes the parent's parameters. Variants after
  the first ask for another reasonable reading of the prompt. Without a model, a named
  family is built from its defaults; anything else cannot be made here.
- The model answers "none" when no family fits; `NoFamilyFits` then lets the job hand
  the request to the CadQuery provider. A child of a part that came from no family
  (a CadQuery script, a cloud) raises it at once: a family would lose its shape.
"""

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
import json
import logging
import threading
from typing import Any

from pydantic import BaseModel, ValidationError

from kittyai.cad.families import (
    FAMILIES,
    PartFamily,
    family_named,
    parse_parameters as parse_family_parameters,
)
from kittyai.cad.geometry import TIMES, GeometryError, check_part, export_part, measure
from kittyai.cad.options import PrinterProfile
from kittyai.cad.providers.base import NO_MODEL, ProviderError, ProviderResult, VariantTask
from kittyai.chat_model import ChatModel, Message, ModelError
from kittyai.contract.cad import Artifact, GenerateRequest, ParameterValue, ProviderName
from kittyai.validation import describe_errors

_LOGGER = logging.getLogger(__name__)

NONE_FITS = "none"
# Times an invalid answer goes back to the model with what was wrong.
REPAIR_ROUNDS = 1
_SCHEMA_NAME = "part_family_choice"


class NoFamilyFits(ProviderError):
    """No part family of the library fits the request."""


class InvalidParameters(ProviderError):
    """The parameters do not fit the family; the message names the parameter and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """How the parametric provider would make a request."""

    # The family the request or its parent fixes, if any.
    family: PartFamily | None
    # The parent's parameters overridden by the request's.
    parameters: dict[str, ParameterValue]
    # Whether the prompt is read by the model.
    ask_model: bool
    # Whether the request cannot be made at all without a model.
    needs_model: bool
    # The request changes a part that came from no family.
    parent_without_family: bool


def plan(request: GenerateRequest, parent: Artifact | None) -> Plan:
    """Return how `request`, a child of `parent` when given, would be made.

    Raises:
        UnknownFamilyError: The request names a family the library does not have.
    """
    name = request.family or (parent.family if parent is not None else None)
    family = family_named(name) if name is not None else None
    inherited = parent.parameters if parent is not None and parent.family == name else {}
    # More than one variant of the same parameters would be the same part.
    ask_model = request.prompt is not None and (not request.parameters or request.variants > 1)
    return Plan(
        family=family,
        parameters={**inherited, **request.parameters},
        ask_model=ask_model,
        # A named family has defaults; a child's prompt needs someone to read it.
        needs_model=ask_model and request.family is None,
        parent_without_family=parent is not None and family is None,
    )


def parse_parameters(family: PartFamily, values: Mapping[str, Any]) -> BaseModel:
    """Return `values` parsed as the family's parameters.

    Raises:
        InvalidParameters: They do not fit; the message names each bad parameter.
    """
    try:
        return parse_family_parameters(family.name, values)
    except ValidationError as err:
        raise InvalidParameters(
            f"invalid parameters for {family.name}: {describe_errors(err)}"
        ) from None


def size_problem(family: PartFamily, parameters: BaseModel, printer: PrinterProfile) -> str | None:
    """Return why the part would not fit the printer, or None when it fits."""
    size = family.envelope(parameters)
    if all(extent <= limit for extent, limit in zip(size, printer.build_volume, strict=True)):
        return None
    part = TIMES.join(f"{extent:g}" for extent in size)
    volume = TIMES.join(f"{limit:g}" for limit in printer.build_volume)
    return f"the part would be {part} mm; the printer {printer.name} builds at most {volume} mm"


class ParametricProvider:
    """Builds parts of the library's families with CadQuery."""

    def __init__(self, model: ChatModel) -> None:
        """Ask `model` when a prompt has to be read."""
        self._model = model
        # OCCT is not thread-safe. A threading lock, held in the worker thread: a
        # cancelled await leaves its thread running, and an asyncio lock would not.
        self._cad_lock = threading.Lock()

    @property
    def name(self) -> ProviderName:
        """Return PARAMETRIC."""
        return ProviderName.PARAMETRIC

    async def unavailable_reason(self) -> str | None:
        """Return why prompts cannot be read: no model. Families build without one."""
        return None if self._model.configured else NO_MODEL

    async def generate(self, task: VariantTask) -> ProviderResult:
        """Make the variant's part: choose the family and parameters, then build it."""
        how = plan(task.request, task.parent)
        if how.parent_without_family:
            raise NoFamilyFits("the part being changed was not made from a part family")
        repair_rounds = 0
        if how.ask_model and self._model.configured:
            family, parameters, repair_rounds = await self._ask(task, how)
        elif how.family is not None and not how.needs_model:
            family = how.family
            parameters = parse_parameters(family, how.parameters)
            if (problem := size_problem(family, parameters, task.printer)) is not None:
                raise ProviderError(problem)
        else:
            raise ProviderError(f"{NO_MODEL} to read the prompt")
        result = await self._build(family, parameters, task)
        return ProviderResult(
            files=result.files,
            metrics=result.metrics,
            family=family.name,
            parameters=parameters.model_dump(mode="json"),
            repair_rounds=repair_rounds,
        )

    async def _ask(self, task: VariantTask, how: Plan) -> tuple[PartFamily, BaseModel, int]:
        """Return the family and parameters the model chose, and the repair rounds it took."""
        families = [how.family] if how.family is not None else list(FAMILIES.values())
        messages: list[Message] = [
            {"role": "system", "content": _system_prompt(families)},
            {"role": "user", "content": _user_prompt(task, how)},
        ]
        schema = _answer_schema(families)
        problem: InvalidParameters | None = None
        for repair_round in range(REPAIR_ROUNDS + 1):
            try:
                answer = await self._model.complete_json(
                    messages, schema_name=_SCHEMA_NAME, schema=schema, temperature=task.temperature
                )
            except ModelError as err:
                raise ProviderError(str(err)) from None
            try:
                family, parameters = _read_answer(answer, families, how, task.printer)
            except InvalidParameters as err:
                _LOGGER.info("Model answer refused (round %d): %s", repair_round, err)
                messages += [
                    {"role": "assistant", "content": json.dumps(answer)},
                    {
                        "role": "user",
                        "content": f"That answer cannot be built: {err}. Answer again, fixed.",
                    },
                ]
                problem = err
                continue
            return family, parameters, repair_round
        raise ProviderError(
            f"the model's answer could not be built: {problem}", repair_rounds=REPAIR_ROUNDS
        )

    async def _build(
        self, family: PartFamily, parameters: BaseModel, task: VariantTask
    ) -> ProviderResult:
        def build() -> ProviderResult:
            with self._cad_lock:
                shape = check_part(
                    family.build(parameters),
                    task.printer.build_volume,
                    max_solids=family.max_solids,
                )
                files = export_part(shape, task.out_dir)
                return ProviderResult(files=files, metrics=measure(shape, task.density_g_cm3))

        try:
            return await asyncio.to_thread(build)
        except GeometryError as err:
            raise ProviderError(f"{family.name} cannot be built: {err}") from None


def _read_answer(
    answer: Any, families: list[PartFamily], how: Plan, printer: PrinterProfile
) -> tuple[PartFamily, BaseModel]:
    """Return the family and parameters of the model's answer.

    Raises:
        NoFamilyFits: The model answered "none".
        InvalidParameters: The answer does not name a family, or its parameters do not
            fit the family or the printer.
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("parameters", {}), dict):
        raise InvalidParameters('the answer must be {"family": ..., "parameters": {...}}')
    name = answer.get("family")
    if name == NONE_FITS:
        raise NoFamilyFits("no part family of the library fits the request")
    family = next((family for family in families if family.name == name), None)
    if family is None:
        choices = ", ".join(f'"{family.name}"' for family in families)
        raise InvalidParameters(f'family must be one of {choices} or "{NONE_FITS}"')
    # A child's answer may hold only what changed.
    inherited = how.parameters if how.family is not None else {}
    parameters = parse_parameters(family, {**inherited, **answer.get("parameters", {})})
    if (problem := size_problem(family, parameters, printer)) is not None:
        raise InvalidParameters(problem)
    return family, parameters


def _system_prompt(families: list[PartFamily]) -> str:
    lines = [
        "You turn a request for a 3D-printed part into a part family of KITTY's library"
        " and the family's parameters. All lengths are in millimetres.",
        "",
        "The families:",
    ]
    for family in families:
        lines.append(f"- {family.name}: {family.description}")
        lines += [f"  - {line}" for line in _parameter_lines(family)]
    lines += [
        "",
        # Described, not templated: small models copy placeholders such as "<name>"
        # verbatim, and a filled-in example's family wins whatever was asked.
        'Answer JSON with two keys: "family", one of the names above, and "parameters",'
        " an object from the family's parameter names to their values. Leave out"
        " parameters whose default suits the request.",
        f'If no family fits the request, answer {{"family": "{NONE_FITS}", "parameters": {{}}}}.',
    ]
    return "\n".join(lines)


def _parameter_lines(family: PartFamily) -> list[str]:
    """Return one line per parameter: name, type, description and default."""
    schema = family.parameters.model_json_schema()
    lines = []
    for name, spec in schema.get("properties", {}).items():
        kind = spec.get("type") or " or ".join(
            str(choice.get("type", "value")) for choice in spec.get("anyOf", [])
        )
        if "enum" in spec:
            kind = "one of " + ", ".join(json.dumps(choice) for choice in spec["enum"])
        line = f"{name} ({kind or 'value'})"
        if description := spec.get("description"):
            line += f": {description}"
        if "default" in spec:
            line += f" (default {json.dumps(spec['default'])})"
        lines.append(line)
    return lines


def _user_prompt(task: VariantTask, how: Plan) -> str:
    prompt = task.request.prompt or ""
    if how.family is not None and how.parameters:
        text = (
            f"The part so far is a {how.family.name} with the parameters"
            f" {json.dumps(how.parameters, sort_keys=True)}.\nChange it as asked: {prompt}\n"
            f"Answer the family {how.family.name} with the parameters after the change."
        )
    else:
        text = prompt
    if task.variant > 0:
        text += (
            f"\n\nThis is variant {task.variant + 1} of {task.variants}: give another"
            " reasonable reading of the request than the most obvious one (other"
            " proportions or options), still fitting the request."
        )
    return text


def _answer_schema(families: list[PartFamily]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "family": {
                "type": "string",
                "enum": [family.name for family in families] + [NONE_FITS],
            },
            "parameters": {"type": "object"},
        },
        "required": ["family", "parameters"],
        "additionalProperties": False,
    }
