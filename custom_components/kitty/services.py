"""Service actions of the KITTY integration: ask, make parts, print, know, run jobs."""

from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
import re
from typing import Any, Final

from homeassistant.components import conversation
from homeassistant.components.scene.const import DOMAIN as SCENE_DOMAIN
from homeassistant.components.script.const import DOMAIN as SCRIPT_DOMAIN
from homeassistant.const import ATTR_DEVICE_ID
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import config_validation as cv, entity_registry as er
import probatio
from pydantic import BaseModel, ValidationError

from kittyai.contract.cad import (
    MAX_PROMPT_LENGTH,
    MAX_VARIANTS,
    GenerateRequest,
    JobState,
    Material,
)
from kittyai.contract.orchestrator import (
    ApprovalRequest,
    CancelRequest,
    CreateRunRequest,
    Decision,
    RetryRequest,
    RunInfo,
)
from kittyai.contract.rag import (
    MAX_NOTE_LENGTH,
    MAX_QUERY_LENGTH,
    MAX_SEARCH_LIMIT,
    NAME_PATTERN,
    IngestRequest,
    NoteRequest,
    SearchRequest,
)
from kittyai.orchestrator_client import OrchestratorClient
from kittyai.printers.base import PrinterStatus
from kittyai.validation import describe_errors

from .cad import (
    artifact_summary,
    async_artifact_gcode,
    async_save_preview,
    loaded_cad,
    translated_cad_errors,
)
from .const import DOMAIN
from .knowledge import async_author, hit_summary, required_knowledge, translated_knowledge_errors
from .printer_coordinator import PrinterCoordinator
from .runs import async_run_user, required_runs, run_summary, translated_run_errors
from .scenes import async_run_scenes
from .turn import KittyTurn, current_turn

SERVICE_ASK: Final = "ask"
ATTR_TEXT: Final = "text"
ATTR_AGENT_ID: Final = "agent_id"
ATTR_CONVERSATION_ID: Final = "conversation_id"
ATTR_LANGUAGE: Final = "language"

ASK_SCHEMA: Final = probatio.Schema(
    {
        probatio.Required(ATTR_TEXT): cv.string,
        probatio.Optional(ATTR_AGENT_ID): cv.entity_id,
        # The router keeps conversation ids of up to 128 characters.
        probatio.Optional(ATTR_CONVERSATION_ID): probatio.All(
            cv.string, probatio.Length(min=1, max=128)
        ),
        probatio.Optional(ATTR_LANGUAGE): cv.string,
    }
)

SERVICE_GENERATE_CAD: Final = "generate_cad"
ATTR_PROMPT: Final = "prompt"
ATTR_FAMILY: Final = "family"
ATTR_PARAMETERS: Final = "parameters"
ATTR_VARIANTS: Final = "variants"
# A printer profile of the CAD service (what the part must fit), not a KITTY printer.
ATTR_PRINTER_PROFILE: Final = "printer"
ATTR_MATERIAL: Final = "material"
ATTR_PARENT_ID: Final = "parent_id"
ATTR_SLICE: Final = "slice"
# Most parts take seconds; a model that writes CadQuery and repairs it takes minutes.
GENERATE_TIMEOUT_S: Final = 300.0

GENERATE_CAD_SCHEMA: Final = probatio.All(
    probatio.Schema(
        {
            probatio.Optional(ATTR_PROMPT): probatio.All(
                cv.string, probatio.Length(min=1, max=MAX_PROMPT_LENGTH)
            ),
            probatio.Optional(ATTR_FAMILY): cv.string,
            # Each family checks its own parameters; the service names a wrong one.
            probatio.Optional(ATTR_PARAMETERS): dict,
            probatio.Optional(ATTR_VARIANTS, default=1): probatio.All(
                probatio.Coerce(int), probatio.Range(min=1, max=MAX_VARIANTS)
            ),
            probatio.Optional(ATTR_PRINTER_PROFILE): cv.string,
            probatio.Optional(ATTR_MATERIAL, default=Material.PLA.value): probatio.In(
                [material.value for material in Material]
            ),
            probatio.Optional(ATTR_PARENT_ID): cv.string,
            probatio.Optional(ATTR_SLICE, default=True): cv.boolean,
            probatio.Optional(ATTR_CONVERSATION_ID): probatio.All(
                cv.string, probatio.Length(min=1, max=128)
            ),
        }
    ),
    cv.has_at_least_one_key(ATTR_PROMPT, ATTR_FAMILY, ATTR_PARENT_ID),
)

SERVICE_START_PRINT: Final = "start_print"
SERVICE_PAUSE_PRINT: Final = "pause_print"
SERVICE_RESUME_PRINT: Final = "resume_print"
SERVICE_CANCEL_PRINT: Final = "cancel_print"
ATTR_FILE: Final = "file"
# A CAD artifact, printed from the G-code the CAD service sliced for it.
ATTR_ARTIFACT_ID: Final = "artifact_id"
ATTR_NOZZLE_TEMPERATURE: Final = "nozzle_temperature"
ATTR_BED_TEMPERATURE: Final = "bed_temperature"
ATTR_SCENE: Final = "scene"
# The file types OctoPrint and Moonraker print.
GCODE_SUFFIXES: Final = frozenset({".gcode", ".gco", ".g"})

PRINTER_SCHEMA: Final = probatio.Schema({probatio.Required(ATTR_DEVICE_ID): cv.string})
# What to print: a G-code file, or a CAD artifact; one of the two.
PRINT_SOURCE: Final = "print_source"
PRINT_SOURCE_MESSAGE: Final = "give either a file or an artifact_id to print, not both"
START_PRINT_FIELDS: Final = PRINTER_SCHEMA.extend(
    {
        probatio.Exclusive(ATTR_FILE, PRINT_SOURCE, msg=PRINT_SOURCE_MESSAGE): cv.string,
        probatio.Exclusive(ATTR_ARTIFACT_ID, PRINT_SOURCE, msg=PRINT_SOURCE_MESSAGE): cv.string,
        # Preheat targets in °C, within what FDM hotends and beds reach.
        probatio.Optional(ATTR_NOZZLE_TEMPERATURE): probatio.All(
            probatio.Coerce(float), probatio.Range(min=0, max=350)
        ),
        probatio.Optional(ATTR_BED_TEMPERATURE): probatio.All(
            probatio.Coerce(float), probatio.Range(min=0, max=150)
        ),
        # Run as this job starts, after the printer's own start scenes.
        probatio.Optional(ATTR_SCENE): cv.entity_domain([SCENE_DOMAIN, SCRIPT_DOMAIN]),
    }
)
START_PRINT_SCHEMA: Final = probatio.All(
    START_PRINT_FIELDS, cv.has_at_least_one_key(ATTR_FILE, ATTR_ARTIFACT_ID)
)
# The actions that send a running job one command.
JOB_COMMANDS: Final[dict[str, Callable[[PrinterCoordinator], Awaitable[PrinterStatus]]]] = {
    SERVICE_PAUSE_PRINT: PrinterCoordinator.async_pause,
    SERVICE_RESUME_PRINT: PrinterCoordinator.async_resume,
    SERVICE_CANCEL_PRINT: PrinterCoordinator.async_cancel,
}

SERVICE_INGEST_DOCUMENT: Final = "ingest_document"
SERVICE_SEARCH_KNOWLEDGE: Final = "search_knowledge"
SERVICE_ADD_PROJECT_NOTE: Final = "add_project_note"
SERVICE_PROJECT_SUMMARY: Final = "project_summary"
# A path relative to the knowledge service's share folder, or a URL on the home network.
ATTR_PATH: Final = "path"
ATTR_URL: Final = "url"
ATTR_COLLECTION: Final = "collection"
ATTR_PROJECT: Final = "project"
ATTR_TITLE: Final = "title"
ATTR_QUERY: Final = "query"
ATTR_LIMIT: Final = "limit"
ATTR_SOURCE: Final = "source"
ATTR_REFRESH: Final = "refresh"
PROJECT_ID: Final = re.compile(NAME_PATTERN)
DOCUMENT_SOURCE: Final = "document_source"
DOCUMENT_SOURCE_MESSAGE: Final = "give either a path or a url to ingest, not both"

# The knowledge service checks names and sizes itself, and says what is wrong.
INGEST_DOCUMENT_SCHEMA: Final = probatio.All(
    probatio.Schema(
        {
            probatio.Exclusive(ATTR_PATH, DOCUMENT_SOURCE, msg=DOCUMENT_SOURCE_MESSAGE): cv.string,
            probatio.Exclusive(ATTR_URL, DOCUMENT_SOURCE, msg=DOCUMENT_SOURCE_MESSAGE): cv.string,
            probatio.Optional(ATTR_COLLECTION): cv.string,
            probatio.Optional(ATTR_PROJECT): cv.string,
            probatio.Optional(ATTR_TITLE): cv.string,
        }
    ),
    cv.has_at_least_one_key(ATTR_PATH, ATTR_URL),
)
SEARCH_KNOWLEDGE_SCHEMA: Final = probatio.Schema(
    {
        probatio.Required(ATTR_QUERY): probatio.All(
            cv.string, probatio.Length(min=1, max=MAX_QUERY_LENGTH)
        ),
        probatio.Optional(ATTR_LIMIT): probatio.All(
            probatio.Coerce(int), probatio.Range(min=1, max=MAX_SEARCH_LIMIT)
        ),
        probatio.Optional(ATTR_COLLECTION): cv.string,
        probatio.Optional(ATTR_PROJECT): cv.string,
        probatio.Optional(ATTR_SOURCE): cv.string,
    }
)
ADD_PROJECT_NOTE_SCHEMA: Final = probatio.Schema(
    {
        probatio.Required(ATTR_PROJECT): cv.string,
        probatio.Required(ATTR_TEXT): probatio.All(
            cv.string, probatio.Length(min=1, max=MAX_NOTE_LENGTH)
        ),
    }
)
PROJECT_SUMMARY_SCHEMA: Final = probatio.Schema(
    {
        probatio.Required(ATTR_PROJECT): cv.string,
        probatio.Optional(ATTR_REFRESH, default=False): cv.boolean,
    }
)

SERVICE_CREATE_RUN: Final = "create_run"
SERVICE_APPROVE_RUN: Final = "approve_run"
SERVICE_REJECT_RUN: Final = "reject_run"
SERVICE_CANCEL_RUN: Final = "cancel_run"
SERVICE_RETRY_RUN: Final = "retry_run"
ATTR_TEMPLATE: Final = "template"
ATTR_PARAMS: Final = "params"
ATTR_IDEMPOTENCY_KEY: Final = "idempotency_key"
ATTR_RUN_ID: Final = "run_id"
ATTR_REASON: Final = "reason"
ATTR_CHOICE: Final = "choice"
ATTR_FROM_STEP: Final = "from_step"
# What the orchestrator takes; it checks the rest itself, and says what is wrong.
MAX_RUN_TEXT: Final = 1000
RUN_TEXT: Final = probatio.All(cv.string, probatio.Length(min=1, max=MAX_RUN_TEXT))

CREATE_RUN_SCHEMA: Final = probatio.Schema(
    {
        probatio.Required(ATTR_TEMPLATE): cv.string,
        # Each template checks its own parameters; the orchestrator names a wrong one.
        probatio.Optional(ATTR_PARAMS, default=dict): dict,
        probatio.Optional(ATTR_IDEMPOTENCY_KEY): probatio.All(
            cv.string, probatio.Length(min=1, max=128)
        ),
    }
)
RUN_SCHEMA: Final = probatio.Schema({probatio.Required(ATTR_RUN_ID): cv.string})
APPROVE_RUN_SCHEMA: Final = RUN_SCHEMA.extend(
    {
        probatio.Optional(ATTR_REASON): RUN_TEXT,
        probatio.Optional(ATTR_CHOICE): probatio.All(cv.string, probatio.Length(min=1, max=128)),
    }
)
REJECT_RUN_SCHEMA: Final = RUN_SCHEMA.extend({probatio.Optional(ATTR_REASON): RUN_TEXT})
CANCEL_RUN_SCHEMA: Final = REJECT_RUN_SCHEMA
RETRY_RUN_SCHEMA: Final = RUN_SCHEMA.extend(
    # A step's index or its name; by default the first step that did not succeed.
    {probatio.Optional(ATTR_FROM_STEP): probatio.Any(cv.positive_int, cv.string)}
)


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register KITTY's service actions."""
    hass.services.async_register(
        DOMAIN,
        SERVICE_ASK,
        _async_ask,
        schema=ASK_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_GENERATE_CAD,
        _async_generate_cad,
        schema=GENERATE_CAD_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_START_PRINT,
        _async_start_print,
        schema=START_PRINT_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    for service, command in JOB_COMMANDS.items():
        hass.services.async_register(
            DOMAIN,
            service,
            partial(_async_job_command, command),
            schema=PRINTER_SCHEMA,
            supports_response=SupportsResponse.OPTIONAL,
        )
    hass.services.async_register(
        DOMAIN,
        SERVICE_INGEST_DOCUMENT,
        _async_ingest_document,
        schema=INGEST_DOCUMENT_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_SEARCH_KNOWLEDGE,
        _async_search_knowledge,
        schema=SEARCH_KNOWLEDGE_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_ADD_PROJECT_NOTE,
        _async_add_project_note,
        schema=ADD_PROJECT_NOTE_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_PROJECT_SUMMARY,
        _async_project_summary,
        schema=PROJECT_SUMMARY_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )
    for service, handler, schema in (
        (SERVICE_CREATE_RUN, _async_create_run, CREATE_RUN_SCHEMA),
        (SERVICE_APPROVE_RUN, partial(_async_decide_run, Decision.APPROVE), APPROVE_RUN_SCHEMA),
        (SERVICE_REJECT_RUN, partial(_async_decide_run, Decision.REJECT), REJECT_RUN_SCHEMA),
        (SERVICE_CANCEL_RUN, _async_cancel_run, CANCEL_RUN_SCHEMA),
        (SERVICE_RETRY_RUN, _async_retry_run, RETRY_RUN_SCHEMA),
    ):
        hass.services.async_register(
            DOMAIN, service, handler, schema=schema, supports_response=SupportsResponse.OPTIONAL
        )


async def _async_generate_cad(call: ServiceCall) -> ServiceResponse:
    """Have the CAD service make a part, wait for it, and save the previews for the frontend."""
    hass = call.hass
    latest = loaded_cad(hass)
    client = latest.client
    request = _validated(GenerateRequest, dict(call.data), "cad_invalid_request")
    with translated_cad_errors(client):
        job = await client.wait((await client.generate(request)).id, GENERATE_TIMEOUT_S)
        if job.state is JobState.FAILED:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="cad_failed",
                translation_placeholders={"job_id": job.id, "error": job.error or ""},
            )
        artifacts: list[Any] = []
        for variant in job.variants:
            if variant.artifact_id is not None:
                artifact = await client.artifact(variant.artifact_id)
                preview = await async_save_preview(hass, client, artifact)
                artifacts.append(artifact_summary(artifact, preview))
    # The image entity shows the new part now, not once MQTT tells.
    await latest.async_refresh()
    return {
        "job_id": job.id,
        "state": job.state.value,
        "artifacts": artifacts,
        "failed_variants": [
            {"variant": variant.variant, "error": variant.error}
            for variant in job.variants
            if variant.state is JobState.FAILED
        ],
    }


def _validated[M: BaseModel](model: type[M], data: dict[str, Any], translation_key: str) -> M:
    """Return a service's request from an action's data; refuse what the service would.

    The refusal, under `translation_key`, says what is wrong with which field.
    """
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key=translation_key,
            translation_placeholders={"error": describe_errors(err)},
        ) from err


def _knowledge_request[M: BaseModel](model: type[M], data: dict[str, Any]) -> M:
    """Return a knowledge request from an action's data; refuse what the service would."""
    return _validated(model, data, "knowledge_invalid_request")


def _project_id(project: str) -> str:
    """Return a project's id as given; refuse one the knowledge service would not take."""
    if not PROJECT_ID.fullmatch(project):
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="invalid_project",
            translation_placeholders={"project": project},
        )
    return project


async def _async_ingest_document(call: ServiceCall) -> ServiceResponse:
    """Have the knowledge service ingest a file of its share folder or a URL; say what it did."""
    knowledge = required_knowledge(call.hass)
    request = _knowledge_request(IngestRequest, dict(call.data))
    with translated_knowledge_errors(knowledge.client):
        result = await knowledge.client.ingest(request)
    return result.model_dump(mode="json")


async def _async_search_knowledge(call: ServiceCall) -> ServiceResponse:
    """Return the chunks that answer a question best, each with its citation."""
    knowledge = required_knowledge(call.hass)
    request = _knowledge_request(SearchRequest, dict(call.data))
    with translated_knowledge_errors(knowledge.client):
        response = await knowledge.client.search(request)
    return {"query": response.query, "hits": [hit_summary(hit) for hit in response.hits]}


async def _async_add_project_note(call: ServiceCall) -> ServiceResponse:
    """Add a note to a project, from the user who asked; the project is made on its first note."""
    knowledge = required_knowledge(call.hass)
    project = _project_id(call.data[ATTR_PROJECT])
    note = _knowledge_request(
        NoteRequest,
        {"text": call.data[ATTR_TEXT], "author": await async_author(call.hass, call.context)},
    )
    with translated_knowledge_errors(knowledge.client):
        added = await knowledge.client.add_note(project, note)
    return added.model_dump(mode="json")


async def _async_project_summary(call: ServiceCall) -> ServiceResponse:
    """Return what is done, open and next in a project; with refresh, written anew."""
    knowledge = required_knowledge(call.hass)
    project = _project_id(call.data[ATTR_PROJECT])
    with translated_knowledge_errors(knowledge.client):
        summary = await knowledge.client.summary(project, refresh=call.data[ATTR_REFRESH])
    return summary.model_dump(mode="json")


async def _async_run_command(
    call: ServiceCall, command: Callable[[OrchestratorClient], Awaitable[RunInfo]]
) -> ServiceResponse:
    """Send the loaded orchestrator one command; return the run it answers with."""
    client = required_runs(call.hass).client
    with translated_run_errors(client):
        return run_summary(await command(client))


async def _async_create_run(call: ServiceCall) -> ServiceResponse:
    """Have the orchestrator plan and start a run, asked for by the user who called."""
    request = _validated(
        CreateRunRequest,
        {**call.data, "requested_by": await async_run_user(call.hass, call.context)},
        "invalid_run_request",
    )
    return await _async_run_command(call, lambda client: client.create_run(request))


async def _async_decide_run(decision: Decision, call: ServiceCall) -> ServiceResponse:
    """Approve or reject the step a run waits at, as the user who called.

    An automation carries no user (nor does the button of a notification it sent):
    its decisions are recorded as an automation's.
    """
    request = ApprovalRequest(
        decision=decision,
        approver=await async_run_user(call.hass, call.context),
        reason=call.data.get(ATTR_REASON),
        choice=call.data.get(ATTR_CHOICE),
    )
    return await _async_run_command(
        call, lambda client: client.decide(call.data[ATTR_RUN_ID], request)
    )


async def _async_cancel_run(call: ServiceCall) -> ServiceResponse:
    """Stop a run that has not finished; what it did is undone."""
    request = CancelRequest(reason=call.data.get(ATTR_REASON))
    return await _async_run_command(
        call, lambda client: client.cancel(call.data[ATTR_RUN_ID], request)
    )


async def _async_retry_run(call: ServiceCall) -> ServiceResponse:
    """Run a failed, rolled back or cancelled run again, from a step or where it stopped."""
    request = RetryRequest(from_step=call.data.get(ATTR_FROM_STEP))
    return await _async_run_command(
        call, lambda client: client.retry(call.data[ATTR_RUN_ID], request)
    )


async def _async_start_print(call: ServiceCall) -> ServiceResponse:
    """Check the printer and what to print, upload the G-code and print it, then run its scene.

    A CAD artifact's G-code is downloaded to a temporary file, removed once uploaded.
    """
    printer = printer_of_device(call.hass, call.data[ATTR_DEVICE_ID])
    if (artifact_id := call.data.get(ATTR_ARTIFACT_ID)) is not None:
        async with async_artifact_gcode(call.hass, artifact_id) as path:
            status = await _async_print(printer, path, call)
    else:
        status = await _async_print(
            printer, await _async_gcode_file(call.hass, call.data[ATTR_FILE]), call
        )
    if (scene := call.data.get(ATTR_SCENE)) is not None:
        await async_run_scenes(call.hass, [scene], call.context)
    return status_response(printer, status)


async def _async_print(printer: PrinterCoordinator, path: Path, call: ServiceCall) -> PrinterStatus:
    """Print a local G-code file, preheating as the call asks."""
    return await printer.async_start_print(
        path,
        nozzle=call.data.get(ATTR_NOZZLE_TEMPERATURE),
        bed=call.data.get(ATTR_BED_TEMPERATURE),
    )


async def _async_job_command(
    command: Callable[[PrinterCoordinator], Awaitable[PrinterStatus]], call: ServiceCall
) -> ServiceResponse:
    """Send a printer one job command; return the status it read back."""
    printer = printer_of_device(call.hass, call.data[ATTR_DEVICE_ID])
    return status_response(printer, await command(printer))


async def _async_gcode_file(hass: HomeAssistant, file: str) -> Path:
    """Return the G-code file to print; refuse a path HA may not read, or no G-code file."""
    path = Path(file)
    if not path.is_absolute() or not await hass.async_add_executor_job(
        hass.config.is_allowed_path, file
    ):
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="file_not_allowed",
            translation_placeholders={"file": file},
        )
    if not await hass.async_add_executor_job(path.is_file):
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="file_not_found",
            translation_placeholders={"file": file},
        )
    if path.suffix.lower() not in GCODE_SUFFIXES:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="not_gcode",
            translation_placeholders={
                "file": file,
                "suffixes": ", ".join(sorted(GCODE_SUFFIXES)),
            },
        )
    return path


@callback
def loaded_printers(hass: HomeAssistant) -> list[PrinterCoordinator]:
    """Return the printers of every loaded KITTY entry."""
    return [
        printer
        for entry in hass.config_entries.async_loaded_entries(DOMAIN)
        for printer in entry.runtime_data.printers.values()
    ]


@callback
def printer_of_device(hass: HomeAssistant, device_id: str) -> PrinterCoordinator:
    """Return the printer of a device; refuse a device that is no loaded KITTY printer."""
    for printer in loaded_printers(hass):
        if printer.device_id == device_id:
            return printer
    raise ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="unknown_printer",
        translation_placeholders={"device_id": device_id},
    )


def status_response(printer: PrinterCoordinator, status: PrinterStatus) -> dict[str, Any]:
    """Return a printer's status as an action's response and an LLM tool's data."""
    return {
        "printer": printer.name,
        "state": status.state.value,
        "message": status.message,
        "file": status.file,
        "progress": status.progress,
        "print_time_s": status.print_time_s,
        "time_left_s": status.time_left_s,
        "nozzle": {"actual": status.nozzle.actual, "target": status.nozzle.target},
        "bed": {"actual": status.bed.actual, "target": status.bed.target},
    }


async def _async_ask(call: ServiceCall) -> ServiceResponse:
    """Run one turn through a KITTY agent; return its answer and how it was routed."""
    agents = _loaded_agents(call.hass)
    if not agents:
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="no_agent")
    agent_id: str = call.data.get(ATTR_AGENT_ID, agents[0])
    if agent_id not in agents:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="not_kitty_agent",
            translation_placeholders={"agent_id": agent_id},
        )

    token = current_turn.set(turn := KittyTurn())
    try:
        result = await conversation.async_converse(
            call.hass,
            call.data[ATTR_TEXT],
            call.data.get(ATTR_CONVERSATION_ID),
            call.context,
            language=call.data.get(ATTR_LANGUAGE),
            agent_id=agent_id,
        )
    finally:
        current_turn.reset(token)
    # The conversation turned the agent's error into an answer; the action fails with it.
    if turn.error is not None:
        raise turn.error
    return {
        "response": result.response.speech.get("plain", {}).get("speech", ""),
        "conversation_id": result.conversation_id,
        "route": turn.route(),
    }


@callback
def _loaded_agents(hass: HomeAssistant) -> list[str]:
    """Return the entity ids of the KITTY agents that can answer now, in setup order."""
    registry = er.async_get(hass)
    return [
        registry_entry.entity_id
        for entry in hass.config_entries.async_loaded_entries(DOMAIN)
        for registry_entry in er.async_entries_for_config_entry(registry, entry.entry_id)
        if registry_entry.domain == conversation.DOMAIN and not registry_entry.disabled
    ]
