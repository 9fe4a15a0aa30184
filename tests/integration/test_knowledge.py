"""KITTY's knowledge side in Home Assistant, against the real knowledge service process.

One knowledge service (real MiniLM embeddings, SQLite, a share folder of reportlab
manuals) serves the module over HTTP; its model is a FakeOpenAI that writes project
summaries from the notes it is sent. Tests use projects and files of their own. The
tests of what the service pushes over MQTT run one of their own on the test's broker,
so no other service's retained statistics reach HA.
"""

from collections.abc import Iterator
import json
from pathlib import Path
from typing import Any

from homeassistant.components.sensor import ATTR_STATE_CLASS, SensorStateClass
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import (
    ATTR_DEVICE_CLASS,
    CONF_TOKEN,
    CONF_URL,
    STATE_UNAVAILABLE,
    STATE_UNKNOWN,
)
from homeassistant.core import Context, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr, entity_registry as er, llm
from homeassistant.util import dt as dt_util
import probatio
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockUser,
)
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.kitty.const import DOMAIN, SECTION_CAD, SECTION_ORCHESTRATOR, SECTION_RAG
from custom_components.kitty.conversation import RemoteModeAPIInstance
from custom_components.kitty.llm_api import KNOWLEDGE_PROMPT
from kittyai.catalog import ServiceName
from kittyai.contract import RAG_STATS
from tests.helpers.broker import MosquittoBroker
from tests.helpers.fake_llm import FakeOpenAI
from tests.helpers.knowledge_corpus import write_encrypted_pdf, write_manual_pdf
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    MK4_MANUAL_PAGES,
    MK4_MANUAL_TITLE,
    assert_service_down,
    call_tool,
    kitty_entry,
    llm_context,
    open_options,
    options_refused_then_stored,
    publish,
    rag_options,
    run_rag,
    service_request,
    set_up_kitty,
    submit_options,
    suggested,
    wait_for,
)

MANUAL = "kitty/knowledge/prusa-mk4.pdf"
NOTES = "kitty/knowledge/workshop-notes.md"
NOTES_TEXT = (
    "# Workshop notes\n\n## Hotends\n\nThe spare hotend in drawer 4 is an E3D-V6 with a "
    "0.4 mm brass nozzle.\n\n## Laser safety\n\n### Rules\n\n"
    + " ".join(
        f"Rule {number}: keep the lid closed and the air assist running while the laser cuts."
        for number in range(1, 40)
    )
    + "\n"
)
LOCKED = "kitty/knowledge/locked.pdf"
BROKEN = "kitty/knowledge/broken.pdf"


@pytest.fixture(scope="module")
def share(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The share folder: the MK4 manual, notes, an encrypted PDF and one that is no PDF inside."""
    folder = tmp_path_factory.mktemp("share")
    (folder / MANUAL).parent.mkdir(parents=True)
    write_manual_pdf(folder / MANUAL, MK4_MANUAL_PAGES, MK4_MANUAL_TITLE)
    (folder / NOTES).write_text(NOTES_TEXT, encoding="utf-8")
    write_encrypted_pdf(folder / LOCKED)
    (folder / BROKEN).write_bytes(b"%PDF-1.7\n1 0 obj <<\nthis is no PDF")
    return folder


@pytest.fixture(scope="module")
def rag(
    tmp_path_factory: pytest.TempPathFactory, share: Path, rag_model: FakeOpenAI
) -> Iterator[ServiceProcess]:
    """The real knowledge service of the module, without MQTT."""
    yield from run_rag(tmp_path_factory.mktemp("rag"), mqtt_port=None, share=share, model=rag_model)


@pytest.fixture
def pushing_rag(
    tmp_path: Path, mqtt_broker: MosquittoBroker, share: Path, rag_model: FakeOpenAI
) -> Iterator[ServiceProcess]:
    """A real knowledge service of the test's own, pushing over the test's broker."""
    yield from run_rag(tmp_path, mqtt_port=mqtt_broker.port, share=share, model=rag_model)


@pytest.fixture
async def kitty_rag(
    hass: HomeAssistant, router: ServiceProcess, rag: ServiceProcess, mqtt_entry: MockConfigEntry
) -> MockConfigEntry:
    """A loaded KITTY entry whose options name the knowledge service."""
    return await set_up_kitty(hass, router, options=rag_options(rag))


async def call(
    hass: HomeAssistant, service: str, context: Context | None = None, **data: Any
) -> Any:
    """Call one of KITTY's knowledge actions as an automation does; return its response."""
    return await hass.services.async_call(
        DOMAIN, service, data, blocking=True, return_response=True, context=context
    )


def rag_call(rag: ServiceProcess, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the knowledge service's own HTTP API, as another client would."""
    return json.loads(service_request(rag, path, body))


def sensor_id(hass: HomeAssistant, entry: MockConfigEntry, key: str) -> str | None:
    """Return the entity id of a knowledge sensor, by its key; None when there is none."""
    return er.async_get(hass).async_get_entity_id(
        "sensor", DOMAIN, f"{entry.unique_id}_{ServiceName.RAG}_{key}"
    )


def state(hass: HomeAssistant, entry: MockConfigEntry, key: str) -> Any:
    """Return the state object of a knowledge sensor; None when it has none."""
    entity_id = sensor_id(hass, entry, key)
    return hass.states.get(entity_id) if entity_id else None


async def sensors_loaded(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Wait until the knowledge sensors show the service's first statistics."""
    await wait_for(
        hass,
        lambda: (
            (documents := state(hass, entry, "documents")) is not None
            and documents.state not in (STATE_UNAVAILABLE, STATE_UNKNOWN)
        ),
        "the knowledge sensors",
    )


# -- options flow -------------------------------------------------------------------------


async def loaded_with_knowledge(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Wait until the entry reloaded with its knowledge service."""
    await wait_for(
        hass,
        lambda: entry.state is ConfigEntryState.LOADED and entry.runtime_data.rag is not None,
        "the entry to reload with the knowledge service",
    )


async def test_options_connect_the_knowledge_service(
    hass: HomeAssistant, kitty: MockConfigEntry, rag: ServiceProcess
) -> None:
    """The service's URL and token are checked and stored; its sensors come with the reload."""
    assert kitty.runtime_data.rag is None
    result = await open_options(hass, kitty)
    assert set(result["data_schema"].schema) == {SECTION_CAD, SECTION_RAG, SECTION_ORCHESTRATOR}

    result = await submit_options(
        hass, result["flow_id"], cad={}, rag={CONF_URL: f"{rag.url}/", CONF_TOKEN: rag.token}
    )

    assert result["type"] is FlowResultType.CREATE_ENTRY
    # Stored as it was checked: without the trailing slash.
    assert kitty.options == rag_options(rag)
    await loaded_with_knowledge(hass, kitty)
    assert str(kitty.runtime_data.rag.url) == rag.url
    await sensors_loaded(hass, kitty)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("wrong_token", "invalid_auth"),
        ("router", "not_rag_service"),
        ("closed_port", "cannot_connect"),
        ("not_a_url", "invalid_url"),
    ],
)
async def test_options_errors_then_recover(
    hass: HomeAssistant,
    kitty: MockConfigEntry,
    *,
    router: ServiceProcess,
    rag: ServiceProcess,
    closed_url: str,
    case: str,
    error: str,
) -> None:
    """Each problem shows its error for the knowledge service, the URL typed but no token."""
    url, token = {
        "wrong_token": (rag.url, "wrong-token"),
        "router": (router.url, router.token),
        "closed_port": (closed_url, rag.token),
        "not_a_url": ("rag.local", rag.token),
    }[case]

    await options_refused_then_stored(
        hass, kitty, SECTION_RAG, rag, url=url, token=token, error=error
    )
    await loaded_with_knowledge(hass, kitty)


async def test_options_not_a_kitty_service(
    hass: HomeAssistant, kitty: MockConfigEntry, not_kitty_url: str
) -> None:
    """A server that answers, but not as a KITTY service, is no knowledge service."""
    flow_id = (await open_options(hass, kitty))["flow_id"]
    result = await submit_options(hass, flow_id, rag={CONF_URL: not_kitty_url, CONF_TOKEN: "token"})
    assert result["errors"] == {"base": "not_rag_service"}


async def test_options_keep_the_token_then_turn_knowledge_off(
    hass: HomeAssistant, kitty_rag: MockConfigEntry, rag: ServiceProcess
) -> None:
    """A section left out or sent without a token keeps what is stored; no URL turns it off."""
    await sensors_loaded(hass, kitty_rag)
    result = await open_options(hass, kitty_rag)
    # The stored URL is offered; the token never goes back to the browser.
    assert suggested(result, SECTION_RAG, CONF_URL) == rag.url
    assert suggested(result, SECTION_RAG, CONF_TOKEN) is None
    assert suggested(result, SECTION_CAD, CONF_URL) == ""

    result = await submit_options(hass, result["flow_id"], cad={})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert kitty_rag.options == rag_options(rag)

    result = await submit_options(
        hass, (await open_options(hass, kitty_rag))["flow_id"], rag={CONF_URL: rag.url}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert kitty_rag.options == rag_options(rag)
    await loaded_with_knowledge(hass, kitty_rag)

    result = await submit_options(
        hass, (await open_options(hass, kitty_rag))["flow_id"], cad={}, rag={}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert kitty_rag.options == {}
    await wait_for(
        hass,
        lambda: kitty_rag.state is ConfigEntryState.LOADED and kitty_rag.runtime_data.rag is None,
        "the entry to reload without the knowledge service",
    )
    assert state(hass, kitty_rag, "documents").state == STATE_UNAVAILABLE
    with pytest.raises(ServiceValidationError) as refused:
        await call(hass, "search_knowledge", query="bed temperature")
    assert refused.value.translation_key == "knowledge_not_configured"
    # Without a knowledge service the model is not offered tools that cannot work.
    instance = await llm.async_get_api(hass, DOMAIN, llm_context())
    assert "SearchKnowledge" not in [tool.name for tool in instance.tools]
    assert KNOWLEDGE_PROMPT not in instance.api_prompt


# -- actions --------------------------------------------------------------------------------


async def test_ingest_then_search_with_citations(
    hass: HomeAssistant, kitty_rag: MockConfigEntry
) -> None:
    """A manual is ingested once; the question finds its page, cited with title and page."""
    first = await call(hass, "ingest_document", path=MANUAL, collection="manuals")
    again = await call(hass, "ingest_document", path=MANUAL, collection="manuals")

    assert first["outcome"] in ("ingested", "unchanged")
    assert again["outcome"] == "unchanged"
    document = again["document"]
    assert document["title"] == MK4_MANUAL_TITLE
    assert document["source"] == f"share:{MANUAL}"
    assert document["pages"] == len(MK4_MANUAL_PAGES)
    assert document["collection"] == "manuals"

    found = await call(
        hass, "search_knowledge", query="What is the max bed temperature?", collection="manuals"
    )

    assert found["query"] == "What is the max bed temperature?"
    top = found["hits"][0]
    assert top["page"] == 3
    assert "maximum bed temperature is 120 °C" in top["text"]
    assert top["citation"].startswith(f"{MK4_MANUAL_TITLE}, p. 3")
    assert top["source"] == f"share:{MANUAL}"
    assert top["document_id"] == document["id"]
    limited = await call(hass, "search_knowledge", query="nozzle temperature", limit=1)
    assert len(limited["hits"]) == 1

    # A document without pages is cited by its headings; its title is not said twice.
    await call(hass, "ingest_document", path=NOTES, collection="notes", title="Workshop notes")
    found = await call(hass, "search_knowledge", query="E3D-V6", collection="notes")
    assert found["hits"][0]["page"] is None
    assert found["hits"][0]["section"] == ["Workshop notes", "Hotends"]
    assert found["hits"][0]["citation"] == "Workshop notes, Hotends"


async def test_notes_have_their_author_and_make_the_summary(
    hass: HomeAssistant, kitty_rag: MockConfigEntry, rag: ServiceProcess, hass_admin_user: MockUser
) -> None:
    """A note is from the user who added it, or from Home Assistant; the summary lists it."""
    mine = await call(
        hass,
        "add_project_note",
        Context(user_id=hass_admin_user.id),
        project="drone-frame",
        text="Motor mounts need 3 mm inserts.",
    )
    automated = await call(
        hass, "add_project_note", project="drone-frame", text="Order 8 more props."
    )

    assert (mine["project"], mine["author"]) == ("drone-frame", hass_admin_user.name)
    assert automated["author"] == "Home Assistant"
    project = rag_call(rag, "/api/projects/drone-frame")
    assert [(note["text"], note["author"]) for note in project["notes"]] == [
        ("Motor mounts need 3 mm inserts.", hass_admin_user.name),
        ("Order 8 more props.", "Home Assistant"),
    ]

    summary = await call(hass, "project_summary", project="drone-frame", refresh=True)

    assert summary["project"] == "drone-frame"
    assert summary["open"] == ["Motor mounts need 3 mm inserts.", "Order 8 more props."]
    assert summary["model"] == "gpt-5-mini"
    assert summary["stale"] is False
    assert summary["notes_included"] == 2
    # Notes are searchable like manuals.
    found = await call(hass, "search_knowledge", query="motor mount inserts", project="drone-frame")
    assert "3 mm inserts" in found["hits"][0]["text"]


REJECTED = "knowledge_rejected"
INVALID = "knowledge_invalid_request"


@pytest.mark.parametrize(
    ("service", "data", "key", "named"),
    [
        ("ingest_document", {"path": "kitty/knowledge/missing.pdf"}, REJECTED, "missing.pdf"),
        ("ingest_document", {"path": LOCKED}, REJECTED, "locked.pdf"),
        ("ingest_document", {"path": BROKEN}, REJECTED, "broken.pdf"),
        ("ingest_document", {"url": "http://93.184.215.14/mk4.pdf"}, REJECTED, "93.184.215.14"),
        ("ingest_document", {"path": MANUAL, "collection": "My Manuals"}, INVALID, "collection"),
        ("search_knowledge", {"query": "bed", "project": "Drone Frame"}, INVALID, "project"),
        ("add_project_note", {"project": "Drone Frame", "text": "hi"}, "invalid_project", "Drone"),
        ("project_summary", {"project": "never-noted"}, "unknown_project", "never-noted"),
    ],
)
async def test_refused_requests(
    hass: HomeAssistant,
    kitty_rag: MockConfigEntry,
    *,
    service: str,
    data: dict[str, Any],
    key: str,
    named: str,
) -> None:
    """What the service or HA refuses is a translated validation error naming the problem."""
    with pytest.raises(ServiceValidationError) as refused:
        await call(hass, service, **data)
    assert refused.value.translation_key == key
    assert named in str(refused.value)


async def test_both_a_path_and_a_url(hass: HomeAssistant, kitty_rag: MockConfigEntry) -> None:
    """A document comes from one place: a path or a URL, not both, not neither."""
    with pytest.raises(probatio.Invalid, match="either a path or a url"):
        await call(hass, "ingest_document", path=MANUAL, url="http://192.168.1.5/mk4.pdf")
    with pytest.raises(probatio.Invalid):
        await call(hass, "ingest_document", collection="manuals")


async def test_service_down_and_token_rejected(
    hass: HomeAssistant,
    *,
    router: ServiceProcess,
    rag: ServiceProcess,
    mqtt_entry: MockConfigEntry,
    closed_url: str,
    hass_client: ClientSessionGenerator,
) -> None:
    """A service that does not answer, or rejects the token, fails the actions, not the entry."""
    entry = await set_up_kitty(hass, router, options=rag_options(url=closed_url))
    assert entry.state is ConfigEntryState.LOADED
    await wait_for(
        hass,
        lambda: (
            (documents := state(hass, entry, "documents")) is not None
            and documents.state == STATE_UNAVAILABLE
        ),
        "the documents sensor to be unavailable",
    )
    with pytest.raises(HomeAssistantError) as failed:
        await call(hass, "ingest_document", path=MANUAL)
    assert failed.value.translation_key == "knowledge_unavailable"
    assert closed_url in str(failed.value)
    # The model reads the same: its tools answer with the error instead of failing the turn.
    await assert_service_down(
        hass,
        hass_client,
        entry,
        section="knowledge",
        url=closed_url,
        tools={
            "SearchKnowledge": {"query": "bed temperature"},
            "AddProjectNote": {"project": "drone", "text": "Check the props."},
            "SummarizeProject": {"project": "drone"},
            "ListProjects": {},
        },
    )

    assert await hass.config_entries.async_unload(entry.entry_id)
    entry = await set_up_kitty(
        hass,
        router,
        options={SECTION_RAG: {CONF_URL: rag.url, CONF_TOKEN: "wrong-token-0123456789"}},
    )
    with pytest.raises(HomeAssistantError) as rejected:
        await call(hass, "project_summary", project="drone-frame")
    assert rejected.value.translation_key == "knowledge_invalid_auth"
    assert "wrong-token" not in str(rejected.value)


# -- sensors --------------------------------------------------------------------------------


async def test_sensors_follow_the_service_over_mqtt(
    hass: HomeAssistant,
    router: ServiceProcess,
    pushing_rag: ServiceProcess,
    mqtt_entry: MockConfigEntry,
    share: Path,
) -> None:
    """Documents, chunks and the last ingest follow what the service pushes; so do projects."""
    rag = pushing_rag
    kitty_rag = await set_up_kitty(hass, router, options=rag_options(rag))
    await sensors_loaded(hass, kitty_rag)
    device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, f"{kitty_rag.unique_id}_{ServiceName.RAG}"), kitty_rag.entry_id
    )
    assert device is not None
    assert device.name == "KITTY Knowledge"
    registry = er.async_get(hass)
    for key in ("documents", "chunks", "last_ingest"):
        entity_id = sensor_id(hass, kitty_rag, key)
        assert entity_id is not None
        assert registry.async_get(entity_id).device_id == device.id
    assert state(hass, kitty_rag, "documents").attributes[ATTR_STATE_CLASS] == (
        SensorStateClass.MEASUREMENT
    )
    assert state(hass, kitty_rag, "chunks").attributes[ATTR_STATE_CLASS] == (
        SensorStateClass.MEASUREMENT
    )
    assert state(hass, kitty_rag, "last_ingest").attributes[ATTR_DEVICE_CLASS] == "timestamp"

    # Another client ingests: only MQTT can tell HA (its safety poll is minutes away).
    write_manual_pdf(
        share / "kitty/knowledge/laser.pdf", [["Use air assist."]], "Laser cutter manual"
    )
    ingested = rag_call(rag, "/api/ingest", {"path": "kitty/knowledge/laser.pdf"})["document"]
    stats = rag_call(rag, "/api/stats")
    await wait_for(
        hass,
        lambda: (
            state(hass, kitty_rag, "last_ingest").attributes.get("title") == "Laser cutter manual"
        ),
        "the last ingest to show the laser manual",
    )
    last_ingest = state(hass, kitty_rag, "last_ingest")
    ingested_at = dt_util.parse_datetime(ingested["ingested_at"])
    assert ingested_at is not None
    # Home Assistant shows timestamps to the second.
    assert dt_util.parse_datetime(last_ingest.state) == ingested_at.replace(microsecond=0)
    assert state(hass, kitty_rag, "documents").state == str(stats["documents"])
    assert state(hass, kitty_rag, "chunks").state == str(stats["chunks"])

    # A note makes a project active: its open items sensor appears, with the summary's count.
    rag_call(rag, "/api/projects/bench-psu/notes", {"text": "Order a 24 V fan.", "author": "Ada"})
    await wait_for(
        hass,
        lambda: (
            (items := state(hass, kitty_rag, "project_bench-psu_open_items")) is not None
            and items.state == "1"
        ),
        "the bench-psu project's open items",
    )
    items = state(hass, kitty_rag, "project_bench-psu_open_items")
    assert items.name == "KITTY Knowledge bench-psu open items"
    assert items.attributes[ATTR_STATE_CLASS] == SensorStateClass.MEASUREMENT


async def test_broken_statistics_are_ignored(
    hass: HomeAssistant, kitty_rag: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    """A payload on the statistics topic that breaks the contract is logged and changes nothing."""
    await sensors_loaded(hass, kitty_rag)
    documents = state(hass, kitty_rag, "documents").state

    await publish(hass, RAG_STATS.topic(ServiceName.RAG), '{"documents": "many"}')
    await wait_for(
        hass, lambda: "breaks the KITTY contract" in caplog.text, "the broken payload warning"
    )

    assert state(hass, kitty_rag, "documents").state == documents


async def test_sensor_of_a_project_no_longer_active_is_removed(
    hass: HomeAssistant, router: ServiceProcess, rag: ServiceProcess, mqtt_entry: MockConfigEntry
) -> None:
    """A project sensor left from before, of a project that is not active now, goes away."""
    entry = kitty_entry(router, options=rag_options(rag))
    entry.add_to_hass(hass)
    registry = er.async_get(hass)
    retired = registry.async_get_or_create(
        "sensor",
        DOMAIN,
        f"{entry.unique_id}_{ServiceName.RAG}_project_retired-rover_open_items",
        config_entry=entry,
    )
    assert await hass.config_entries.async_setup(entry.entry_id)

    await sensors_loaded(hass, entry)
    await wait_for(
        hass, lambda: registry.async_get(retired.entity_id) is None, "the retired sensor to go"
    )
    assert state(hass, entry, "documents") is not None


async def test_sensors_unavailable_while_the_service_is_stopped(
    hass: HomeAssistant,
    router: ServiceProcess,
    pushing_rag: ServiceProcess,
    mqtt_entry: MockConfigEntry,
) -> None:
    """A service that stops announces it; its sensors turn unavailable instead of going stale."""
    entry = await set_up_kitty(hass, router, options=rag_options(pushing_rag))
    await sensors_loaded(hass, entry)

    pushing_rag.stop()

    await wait_for(
        hass,
        lambda: state(hass, entry, "documents").state == STATE_UNAVAILABLE,
        "the documents sensor to be unavailable",
    )
    assert state(hass, entry, "last_ingest").state == STATE_UNAVAILABLE


# -- diagnostics and tools ------------------------------------------------------------------


async def test_diagnostics_redact_the_knowledge_token(
    hass: HomeAssistant,
    kitty_rag: MockConfigEntry,
    rag: ServiceProcess,
    hass_client: ClientSessionGenerator,
) -> None:
    """The knowledge service's token never leaves; its URL and statistics do."""
    await sensors_loaded(hass, kitty_rag)

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, kitty_rag)

    assert rag.token not in json.dumps(diagnostics)
    assert diagnostics["entry"]["options"][SECTION_RAG] == {
        CONF_URL: rag.url,
        CONF_TOKEN: "**REDACTED**",
    }
    assert diagnostics["knowledge"]["url"] == rag.url
    assert diagnostics["knowledge"]["available"] is True
    assert diagnostics["knowledge"]["stats"] == rag_call(rag, "/api/stats") | {
        "active_projects": diagnostics["knowledge"]["stats"]["active_projects"]
    }


async def test_tools_search_note_summarize_and_list(
    hass: HomeAssistant, kitty_rag: MockConfigEntry, hass_admin_user: MockUser
) -> None:
    """The knowledge tools: cited snippets marked as data, notes from the user, projects."""
    await call(hass, "ingest_document", path=MANUAL, collection="manuals")
    instance = await llm.async_get_api(hass, DOMAIN, llm_context())
    tools = {tool.name: tool for tool in instance.tools}
    assert {"SearchKnowledge", "ListProjects", "SummarizeProject", "AddProjectNote"} <= set(tools)
    assert KNOWLEDGE_PROMPT in instance.api_prompt
    assert tools["SearchKnowledge"].annotations.read_only
    assert tools["ListProjects"].annotations.read_only
    assert tools["SummarizeProject"].annotations.read_only
    assert not tools["AddProjectNote"].annotations.read_only
    # Remote mode still answers from the manuals and the project memory, and takes notes:
    # they change KITTY's memory, nothing in the house.
    remote = {tool.name for tool in RemoteModeAPIInstance.of(instance).tools}
    assert {"SearchKnowledge", "ListProjects", "SummarizeProject", "AddProjectNote"} <= remote

    searched = await call_tool(hass, "SearchKnowledge", query="max bed temperature")

    assert not searched.error
    assert "never instructions" in searched.data["instruction"]
    top = searched.data["retrieved_documents"][0]
    assert (top["title"], top["page"]) == (MK4_MANUAL_TITLE, 3)
    assert top["citation"].startswith(f"{MK4_MANUAL_TITLE}, p. 3")
    assert "120 °C" in top["text"]
    assert set(top) == {"citation", "title", "source", "page", "section", "score", "text"}
    # A long passage reaches the model trimmed.
    await call(hass, "ingest_document", path=NOTES, collection="notes", title="Workshop notes")
    rules = await call_tool(
        hass, "SearchKnowledge", query="laser air assist lid", collection="notes"
    )
    passage = rules.data["retrieved_documents"][0]
    assert passage["section"] == ["Workshop notes", "Laser safety", "Rules"]
    assert passage["citation"] == "Workshop notes, Laser safety \u203a Rules"
    assert passage["text"].endswith(" ...")
    assert len(passage["text"]) <= 1200 + len(" ...")

    # Models name projects loosely: "Plant Sensor " is the project plant-sensor.
    noted = await call_tool(
        hass,
        "AddProjectNote",
        user_id=hass_admin_user.id,
        project="Plant Sensor ",
        text="The probe needs a waterproof cable gland.",
    )
    assert noted.data["done"] is True
    assert noted.data["note"]["project"] == "plant-sensor"
    assert noted.data["note"]["author"] == hass_admin_user.name

    summary = await call_tool(hass, "SummarizeProject", project="plant-sensor")
    assert summary.data["open"] == ["The probe needs a waterproof cable gland."]
    assert summary.data["project"] == "plant-sensor"
    listed = await call_tool(hass, "ListProjects")
    assert "plant-sensor" in [project["project"] for project in listed.data["projects"]]

    unknown = await call_tool(hass, "SummarizeProject", project="no-such-project")
    assert unknown.error
    assert "no-such-project" in unknown.data["error"]
