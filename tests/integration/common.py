"""Helpers of the integration tests."""

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
import json
from pathlib import Path
import threading
from typing import Any
import urllib.request

from homeassistant.components import conversation, mqtt
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.const import CONF_TOKEN, CONF_URL
from homeassistant.core import Context, HomeAssistant, callback
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er, llm
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    get_schema_suggested_value,
)
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.kitty.const import (
    DEFAULT_CONVERSATION_NAME,
    DEFAULT_CONVERSATION_OPTIONS,
    DOMAIN,
    NAME,
    SECTION_CAD,
    SECTION_ORCHESTRATOR,
    SECTION_RAG,
    SUBENTRY_CONVERSATION,
)
from kittyai.catalog import SERVICES, ServiceName
from kittyai.contract import AVAILABILITY, INFO, ROUTER_STATS, RUN_EVENT, RUN_STATS, ServiceInfo
from kittyai.contract.orchestrator import RunEvent, RunEventType, RunState
from kittyai.contract.routing import (
    BudgetState,
    BudgetStatus,
    LastRoute,
    RouteReason,
    RouterStats,
    Tier,
    TierLatency,
)
from tests.helpers.fake_llm import FakeLLMServer, FakeOllama, FakeOpenAI, ScriptedReply
from tests.helpers.net import loopback_sockets
from tests.helpers.orchestrator import ORCHESTRATOR_SERVICE_OPTIONS
from tests.helpers.services import ServiceProcess

OPENAI_KEY = "sk-test-agent-0123456789"
CAD_TOKEN = "cad-token-0123456789"
CAD_MODEL_KEY = "sk-test-cad-0123456789"
RAG_TOKEN = "rag-token-0123456789"
RAG_MODEL_KEY = "sk-test-rag-0123456789"
ORCHESTRATOR_TOKEN = "orchestrator-token-0123456789"
# The manual the knowledge tests ask about, one paragraph a page: the bed's limit is on page 3.
MK4_MANUAL_TITLE = "Prusa MK4 manual"
MK4_MANUAL_PAGES = [
    [
        "Prusa MK4 manual. Thank you for buying the Original Prusa MK4. Unpack the printer "
        "carefully and keep the box for transport."
    ],
    [
        "Hotend. The maximum nozzle temperature is 290 °C. Let the nozzle cool down before "
        "you change it."
    ],
    ["Heatbed. The maximum bed temperature is 120 °C. PEI sheets stay below 110 °C."],
]
WORKSHOP_LIGHTS = "light.workshop_lights"
SHOP_DOOR = "lock.shop_door"


def router_info(router: ServiceProcess) -> ServiceInfo:
    """Ask a running router who it is, over its real HTTP API."""
    request = urllib.request.Request(
        f"{router.url}/api/info", headers={"Authorization": f"Bearer {router.token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return ServiceInfo.model_validate_json(response.read())


def service_request(
    service: ServiceProcess, path: str, body: dict[str, Any] | None = None
) -> bytes:
    """Call a running service's real HTTP API with its token; POST when there is a body."""
    request = urllib.request.Request(
        f"{service.url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {service.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return bytes(response.read())


def router_call(router: ServiceProcess, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call a running router's real HTTP API with its token; POST when there is a body."""
    return json.loads(service_request(router, path, body))


def report_intent_turn(router: ServiceProcess) -> None:
    """Tell the router about a turn HA's intents answered, as the conversation agent does."""
    router_call(router, "/api/routing/decisions", {"latency_ms": 12.5, "intent": "HassTurnOn"})


def kitty_entry(
    router: ServiceProcess,
    *,
    url: str | None = None,
    token: str | None = None,
    options: dict[str, Any] | None = None,
) -> MockConfigEntry:
    """Return an entry for `router` as the config flow makes it; override url or token."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=NAME,
        unique_id=router_info(router).instance_id,
        data={CONF_URL: url or router.url, CONF_TOKEN: token or router.token},
        options=options or {},
    )


def service_options(
    section: str, service: ServiceProcess | None, *, url: str, token: str
) -> dict[str, Any]:
    """Return the entry options the options flow stores for `service` (or a URL and token)."""
    if service is None:
        return {section: {CONF_URL: url, CONF_TOKEN: token}}
    return {section: {CONF_URL: service.url, CONF_TOKEN: service.token}}


def cad_options(cad: ServiceProcess | None = None, *, url: str = "") -> dict[str, Any]:
    """Return the entry options the options flow stores for a CAD service (or a URL)."""
    return service_options(SECTION_CAD, cad, url=url, token=CAD_TOKEN)


def run_service(
    name: ServiceName,
    workdir: Path,
    *,
    mqtt_port: int | None,
    token: str,
    options: dict[str, Any] | None = None,
    timeout: float = 20.0,
) -> Iterator[ServiceProcess]:
    """Run a real service process with `options`; wait `timeout` seconds for it to start."""
    with loopback_sockets():
        process = ServiceProcess(
            name, workdir, mqtt_port=mqtt_port, token=token, extra_options=options
        )
        process.start(timeout=timeout)
    yield process
    process.stop()


def run_cad(
    workdir: Path, *, mqtt_port: int | None, model: FakeOpenAI, **options: Any
) -> Iterator[ServiceProcess]:
    """Run a real CAD service asking `model`, with `options`; it slices with PrusaSlicer."""
    options["model"] = {"url": model.url, "api_key": CAD_MODEL_KEY, "model": "gpt-5-mini"}
    # The CAD kernel takes a few seconds to import.
    yield from run_service(
        ServiceName.CAD, workdir, mqtt_port=mqtt_port, token=CAD_TOKEN, options=options, timeout=60
    )


def rag_options(rag: ServiceProcess | None = None, *, url: str = "") -> dict[str, Any]:
    """Return the entry options the options flow stores for a knowledge service (or a URL)."""
    return service_options(SECTION_RAG, rag, url=url, token=RAG_TOKEN)


def run_rag(
    workdir: Path,
    *,
    mqtt_port: int | None,
    share: Path,
    model: FakeOpenAI | None = None,
    **options: Any,
) -> Iterator[ServiceProcess]:
    """Run a real knowledge service over `share`, without its watch folder.

    With `model`, the service asks it for project summaries.
    """
    options = {"share_dir": str(share), "watch": False, **options}
    if model is not None:
        options["model"] = {"url": model.url, "api_key": RAG_MODEL_KEY, "model": "gpt-5-mini"}
    # Loading the embedding model takes a few seconds.
    yield from run_service(
        ServiceName.RAG, workdir, mqtt_port=mqtt_port, token=RAG_TOKEN, options=options, timeout=60
    )


def orchestrator_options(
    orchestrator: ServiceProcess | None = None, *, url: str = "", token: str = ORCHESTRATOR_TOKEN
) -> dict[str, Any]:
    """Return the entry options the options flow stores for an orchestrator (or a URL)."""
    return service_options(SECTION_ORCHESTRATOR, orchestrator, url=url, token=token)


def run_orchestrator(workdir: Path, *, mqtt_port: int | None) -> Iterator[ServiceProcess]:
    """Run a real orchestrator (SQLite in its data dir) with its drill template."""
    # Its durable engine takes a few seconds to start.
    yield from run_service(
        ServiceName.ORCHESTRATOR,
        workdir,
        mqtt_port=mqtt_port,
        token=ORCHESTRATOR_TOKEN,
        options=ORCHESTRATOR_SERVICE_OPTIONS,
        timeout=60,
    )


async def runs_subscribed(hass: HomeAssistant) -> None:
    """Wait until the broker sends HA the orchestrator's topics: runs begun before go unseen.

    HA reports a subscription done while its SUBSCRIBE may still be on its way, so
    this waits for messages instead: the retained statistics of a running
    orchestrator, and a log line of no run, sent round until it comes back.
    """
    await _delivered(hass, RUN_STATS.pattern)
    probe = RunEvent(
        seq=1,
        run_id="r-subscribed",
        template="probe",
        type=RunEventType.LOG,
        at=datetime.now(UTC),
        state=RunState.QUEUED,
    )
    await _delivered(
        hass,
        RUN_EVENT.wildcard,
        probe=(RUN_EVENT.topic_for(run_id=probe.run_id), probe.model_dump_json()),
    )


async def _delivered(hass: HomeAssistant, topic: str, probe: tuple[str, str] | None = None) -> None:
    """Wait until HA receives a message on `topic`; publish `probe` (topic, payload) meanwhile."""
    received: list[mqtt.ReceiveMessage] = []

    @callback
    def _receive(msg: mqtt.ReceiveMessage) -> None:
        received.append(msg)

    stop = await mqtt.async_subscribe(hass, topic, _receive, qos=1)
    try:
        async with asyncio.timeout(10):
            while not received:
                if probe is not None:
                    await mqtt.async_publish(hass, *probe, qos=1)
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"HA received nothing on {topic}") from None
    finally:
        stop()


def summarizes_notes(body: dict[str, Any]) -> ScriptedReply:
    """Answer a project summary request as a model would: every note is still open.

    The knowledge service sends the notes as JSON after "Notes, oldest first".
    """
    prompt = body["messages"][-1]["content"]
    notes = json.loads(prompt.rpartition("Notes, oldest first (data, JSON): ")[2])
    texts = [note["text"] for note in notes]
    summary = {
        "done": [],
        "open": texts,
        "next": [f"Work on: {texts[-1]}"],
        "text": f"The project has {len(texts)} open items, the latest: {texts[-1]}",
    }
    return ScriptedReply(json.dumps(summary))


def model_designs(model: FakeOpenAI, family: str, parameters: dict[str, Any]) -> None:
    """Make the CAD service's model answer every request with this family and parameters."""
    answer = json.dumps({"family": family, "parameters": parameters})
    model.requests.clear()
    model.respond_with(lambda _: ScriptedReply(answer))


def words_asked(model: FakeOpenAI) -> str:
    """Return everything the CAD service's model was asked, its messages one after another."""
    return "\n".join(
        message["content"] for request in model.requests for message in request.body["messages"]
    )


def cad_entity_id(hass: HomeAssistant, entry: MockConfigEntry) -> str:
    """Return the entity id of the entry's latest CAD part image."""
    entity_id = er.async_get(hass).async_get_entity_id(
        "image", DOMAIN, f"{entry.unique_id}_cad_latest_part"
    )
    assert entity_id is not None, "no latest CAD part image"
    return entity_id


def llm_context(user_id: str | None = None) -> llm.LLMContext:
    """Return the context a conversation agent passes for one turn, for `user_id` if given."""
    return llm.LLMContext(
        platform="kitty",
        context=Context(user_id=user_id),
        language="en",
        assistant="conversation",
        device_id=None,
    )


async def call_tool(
    hass: HomeAssistant, name: str, user_id: str | None = None, **args: Any
) -> llm.ToolResult:
    """Call one of KITTY's LLM tools as an agent does."""
    instance = await llm.async_get_api(hass, DOMAIN, llm_context(user_id))
    return await instance.async_call_tool(llm.ToolInput(tool_name=name, tool_args=args))


async def assert_service_down(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    entry: MockConfigEntry,
    *,
    section: str,
    url: str,
    tools: dict[str, dict[str, Any]],
) -> None:
    """Check that a service down at `url` fails its tools and shows so in the diagnostics.

    Each of the tools (name → arguments) answers with the error instead of failing the
    turn; the diagnostics' `section` says the service is unavailable, with no statistics.
    """
    for name, args in tools.items():
        result = await call_tool(hass, name, **args)
        assert result.error, name
        assert url in result.data["error"], name
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert diagnostics[section]["available"] is False
    assert url in diagnostics[section]["last_error"]
    assert diagnostics[section]["stats"] is None


async def open_options(hass: HomeAssistant, entry: MockConfigEntry) -> Any:
    """Open the entry's options flow; return its form."""
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    assert result["errors"] == {}
    return result


async def submit_options(hass: HomeAssistant, flow_id: str, **sections: dict[str, str]) -> Any:
    """Submit the options form with these sections, as the frontend sends them."""
    return await hass.config_entries.options.async_configure(flow_id, sections)


async def options_refused_then_stored(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    section: str,
    service: ServiceProcess,
    *,
    url: str,
    token: str,
    error: str,
) -> None:
    """Type a URL and token the options refuse with `error`, then `service`'s, which are stored.

    The refusal names the service and shows the URL again, never the token.
    """
    flow_id = (await open_options(hass, entry))["flow_id"]
    result = await submit_options(hass, flow_id, **{section: {CONF_URL: url, CONF_TOKEN: token}})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": error}
    assert result["description_placeholders"] == {"service": SERVICES[service.name].title}
    assert suggested(result, section, CONF_URL) == url
    assert suggested(result, section, CONF_TOKEN) is None
    assert entry.options == {}

    result = await submit_options(
        hass, flow_id, **{section: {CONF_URL: service.url, CONF_TOKEN: service.token}}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == service_options(section, service, url="", token="")


def suggested(result: Any, section: str, key: str) -> Any:
    """Return what a section of the options form suggests for one of its fields."""
    fields = result["data_schema"].schema[section].schema.schema
    return get_schema_suggested_value(fields, key)


async def wait_for(
    hass: HomeAssistant,
    condition: Callable[[], bool],
    what: str,
    within: float = 15.0,
    *,
    block: bool = True,
) -> None:
    """Let HA run until `condition` holds: real peers answer in their own time.

    `block=False` lets HA work without waiting for its tasks to finish: an
    automation that waits for a trigger is such a task.
    """
    try:
        async with asyncio.timeout(within):
            while not condition():
                await asyncio.sleep(0.02)
                if block:
                    await hass.async_block_till_done()
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def publish(hass: HomeAssistant, topic: str, payload: str) -> None:
    """Publish through HA's MQTT client and the real broker, like any other publisher."""
    await mqtt.async_publish(hass, topic, payload, qos=1, retain=False)


async def contract_subscribed(hass: HomeAssistant) -> None:
    """Wait until the broker confirmed KITTY's subscriptions: messages sent before are lost."""
    for spec in (AVAILABILITY, INFO, ROUTER_STATS):
        done = asyncio.Event()
        stop = mqtt.async_on_subscribe_done(hass, spec.wildcard, spec.qos, done.set)
        try:
            async with asyncio.timeout(10):
                await done.wait()
        finally:
            stop()


async def publish_router_stats(hass: HomeAssistant, stats: RouterStats) -> None:
    """Publish router statistics as the router does: retained, on the real broker."""
    await mqtt.async_publish(
        hass,
        ROUTER_STATS.topic(ServiceName.ROUTER),
        stats.model_dump_json(),
        qos=ROUTER_STATS.qos,
        retain=ROUTER_STATS.retain,
    )


async def set_up_kitty(
    hass: HomeAssistant, router: ServiceProcess, *, options: dict[str, Any] | None = None
) -> MockConfigEntry:
    """Set up KITTY for `router` and wait until the broker confirmed its subscriptions."""
    entry = kitty_entry(router, options=options)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await contract_subscribed(hass)
    return entry


def example_router_stats(**changes: Any) -> RouterStats:
    """Return the statistics of a router that routed a busy afternoon; `changes` override."""
    at = datetime(2026, 10, 22, 14, 30, tzinfo=UTC)
    stats = RouterStats(
        at=at,
        window_hours=24,
        decisions=40,
        local_share=0.875,
        cache_hit_rate=0.25,
        p95_latency_ms=1834.5,
        latency={
            Tier.LOCAL: TierLatency(count=25, p50_ms=640.0, p95_ms=1500.0),
            Tier.CLOUD: TierLatency(count=5, p50_ms=1200.0, p95_ms=2100.0),
        },
        cost_today_usd=0.42,
        cost_month_usd=3.5,
        budgets=[
            BudgetStatus(
                scope="global",
                period="monthly",
                spent_usd=3.5,
                soft_usd=8.0,
                hard_usd=10.0,
                left_usd=6.5,
                state=BudgetState.OK,
            )
        ],
        budget_left_usd=6.5,
        threshold=0.72,
        last_route=LastRoute(
            at=at, tier=Tier.LOCAL, backend="ollama", reason=RouteReason.CONFIDENT
        ),
    )
    return RouterStats.model_validate(stats.model_dump() | changes)


def kitty_agent_entry(
    router: ServiceProcess, *, url: str | None = None, **options: Any
) -> MockConfigEntry:
    """Return an entry for `router` with its default agent, `options` over the defaults."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=NAME,
        unique_id=router_info(router).instance_id,
        data={CONF_URL: url or router.url, CONF_TOKEN: router.token},
        version=1,
        minor_version=2,
        subentries_data=[
            {
                "subentry_type": SUBENTRY_CONVERSATION,
                "data": {**DEFAULT_CONVERSATION_OPTIONS, **options},
                "title": DEFAULT_CONVERSATION_NAME,
                "unique_id": None,
            }
        ],
    )


def served[F: FakeLLMServer](fake: F) -> Iterator[F]:
    """Serve `fake` from its own thread for the tests of a module."""
    runner = FakeInThread(fake)
    with loopback_sockets():
        runner.start()
    yield fake
    runner.stop()


class FakeInThread:
    """Serves a fake model server from a thread with an event loop of its own.

    A module's router starts once, with the fakes' URLs in its options, while every
    test runs on a new event loop: the fakes cannot live on a test's loop.
    """

    def __init__(self, fake: FakeLLMServer) -> None:
        """Serve `fake` once started."""
        self.fake = fake
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=type(fake).__name__, daemon=True
        )

    def start(self) -> None:
        """Start serving."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.__aenter__(), self._loop).result(timeout=10)

    def stop(self) -> None:
        """Stop serving and end the thread."""
        stopping = self.fake.__aexit__(None, None, None)
        asyncio.run_coroutine_threadsafe(stopping, self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def run_router(workdir: Path, **options: Any) -> Iterator[ServiceProcess]:
    """Run a real router without MQTT, with `options` (its backends, budgets...)."""
    yield from run_service(
        ServiceName.ROUTER, workdir, mqtt_port=None, token="agent-token-0123456789", options=options
    )


def agent_router_options(ollama: FakeOllama, openai: FakeOpenAI) -> dict[str, Any]:
    """Return router options with a local and a cloud backend, each tried once, uncached.

    Every answer comes from the fakes (no answer cache), and a cloud failure neither
    retries nor cools the backend down for the next test.
    """
    return {
        "backends": [
            {
                "name": "ollama",
                "kind": "ollama",
                "url": ollama.url,
                "model": "llama3.2",
                "max_retries": 0,
            },
            {
                "name": "gpt",
                "kind": "openai",
                "url": openai.url,
                "model": "gpt-5-mini",
                "api_key": OPENAI_KEY,
                "max_retries": 0,
            },
        ],
        "cache": {"enabled": False},
        "routing": {"cooldown_seconds": 0},
    }


async def set_up_workshop(hass: HomeAssistant) -> None:
    """Add the workshop's light and shop door, real template entities, exposed to Assist."""
    assert await async_setup_component(
        hass,
        "input_boolean",
        {"input_boolean": {"workshop_power": {}, "shop_door_bolt": {"initial": True}}},
    )
    assert await async_setup_component(
        hass,
        "template",
        {
            "template": [
                {
                    "light": [
                        {
                            "name": "Workshop lights",
                            "state": "{{ is_state('input_boolean.workshop_power', 'on') }}",
                            "turn_on": _switch("turn_on", "input_boolean.workshop_power"),
                            "turn_off": _switch("turn_off", "input_boolean.workshop_power"),
                        }
                    ],
                    "lock": [
                        {
                            "name": "Shop door",
                            "state": "{{ is_state('input_boolean.shop_door_bolt', 'on') }}",
                            "lock": _switch("turn_on", "input_boolean.shop_door_bolt"),
                            "unlock": _switch("turn_off", "input_boolean.shop_door_bolt"),
                        }
                    ],
                }
            ]
        },
    )
    await hass.async_block_till_done()
    for entity_id in (WORKSHOP_LIGHTS, SHOP_DOOR):
        async_expose_entity(hass, conversation.DOMAIN, entity_id, True)


def _switch(action: str, entity_id: str) -> dict[str, Any]:
    return {"action": f"input_boolean.{action}", "target": {"entity_id": entity_id}}
