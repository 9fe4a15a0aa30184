"""Fixtures of the integration tests: real routers, printers, a real broker, HA's real MQTT."""

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
import time

from aiohttp import web
from homeassistant.components import mqtt
from homeassistant.const import CONF_PORT
from homeassistant.core import DOMAIN as HOMEASSISTANT_DOMAIN, HomeAssistant
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.kitty.const import DOMAIN
from kittyai.catalog import ServiceName
from tests.helpers.broker import MosquittoBroker
from tests.helpers.fake_llm import FakeOllama, FakeOpenAI
from tests.helpers.moonraker import MoonrakerServer
from tests.helpers.net import free_port, loopback_sockets
from tests.helpers.octoprint import OctoPrintServer
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    CAD_MODEL_KEY,
    OPENAI_KEY,
    RAG_MODEL_KEY,
    agent_router_options,
    run_router,
    run_service,
    served,
    set_up_kitty,
    summarizes_notes,
    wait_for,
)


@pytest.fixture(autouse=True)
async def core(hass: HomeAssistant, enable_custom_integrations: None) -> None:
    """Let HA load custom_components/kitty, with its core set up as in a real instance."""
    assert await async_setup_component(hass, HOMEASSISTANT_DOMAIN, {})


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """Run one real router without MQTT, shared by the tests of a module."""
    yield from run_service(
        ServiceName.ROUTER,
        tmp_path_factory.mktemp("router"),
        mqtt_port=None,
        token="router-token-0123456789",
    )


@pytest.fixture(scope="module")
def other_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """Run a second real router: another KITTY installation."""
    yield from run_service(
        ServiceName.ROUTER,
        tmp_path_factory.mktemp("other-router"),
        mqtt_port=None,
        token="other-token-0123456789",
    )


@pytest.fixture
def closed_url() -> str:
    """Return a URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(
    params=[
        pytest.param(lambda: web.Response(status=500, text="boom"), id="http-500"),
        pytest.param(
            lambda: web.Response(text="<html>hi</html>", content_type="text/html"), id="html"
        ),
        pytest.param(lambda: web.json_response({"hello": "world"}), id="other-json"),
    ]
)
async def not_kitty_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Serve something on 127.0.0.1 that answers, but not like a KITTY router."""
    answer: Callable[[], web.Response] = request.param

    async def handle(_: web.Request) -> web.Response:
        return answer()

    app = web.Application()
    app.router.add_get("/api/info", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def mqtt_entry(
    hass: HomeAssistant, mqtt_broker: MosquittoBroker, mock_hass_config: None
) -> AsyncIterator[MockConfigEntry]:
    """Set up HA's real MQTT integration against the test's Mosquitto.

    MQTT reads configuration.yaml, which the harness does not have: `mock_hass_config`
    makes it an empty one.
    """
    entry = MockConfigEntry(
        domain=mqtt.DOMAIN,
        data={mqtt.CONF_BROKER: mqtt_broker.host, CONF_PORT: mqtt_broker.port},
        version=2,
        minor_version=1,
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_for(hass, lambda: mqtt.is_connected(hass), "HA to connect to the broker")
    yield entry
    # The broker stops before HA does: leave it cleanly while it is still there,
    # KITTY (which unsubscribes) before MQTT itself.
    for kitty in hass.config_entries.async_entries(DOMAIN):
        await hass.config_entries.async_unload(kitty.entry_id)
    await hass.config_entries.async_unload(entry.entry_id)


@pytest.fixture(scope="module")
def ollama() -> Iterator[FakeOllama]:
    """The local model of a module's agent tests."""
    yield from served(FakeOllama())


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeOpenAI]:
    """The cloud model of a module's agent tests."""
    yield from served(FakeOpenAI(api_key=OPENAI_KEY))


@pytest.fixture(scope="module")
def kitty_router(
    tmp_path_factory: pytest.TempPathFactory, ollama: FakeOllama, openai: FakeOpenAI
) -> Iterator[ServiceProcess]:
    """A real router over the two fakes, shared by a module's tests."""
    yield from run_router(tmp_path_factory.mktemp("router"), **agent_router_options(ollama, openai))


@pytest.fixture
def fresh_models(ollama: FakeOllama, openai: FakeOpenAI) -> None:
    """Start a test with models that were asked nothing and answer "OK."."""
    for fake in (ollama, openai):
        fake.requests.clear()
        fake.respond_with(None)


@pytest.fixture(scope="module")
def octoprint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OctoPrintServer]:
    """A real OctoPrint with its Virtual Printer connected, shared by a module's tests."""
    with loopback_sockets():
        server = OctoPrintServer(tmp_path_factory.mktemp("octoprint"))
        server.start()
    try:
        with loopback_sockets():
            server.connect_virtual_printer()
            _wait_for_temperatures(server)
        yield server
    finally:
        server.stop()


@pytest.fixture
def idle_octoprint(octoprint: OctoPrintServer) -> Iterator[OctoPrintServer]:
    """The module's OctoPrint, left idle and connected after the test, whatever it did."""
    yield octoprint
    state = octoprint.request("GET", "/api/job")["state"]
    if state in ("Offline", "Closed"):
        octoprint.connect_virtual_printer()
    elif state != "Operational":
        octoprint.request("POST", "/api/job", {"command": "cancel"})
        deadline = time.monotonic() + 15
        while octoprint.request("GET", "/api/job")["state"] != "Operational":
            if time.monotonic() > deadline:
                raise TimeoutError(f"OctoPrint did not cancel the job:\n{octoprint.log()}")
            time.sleep(0.1)
    _wait_for_temperatures(octoprint)


def _wait_for_temperatures(server: OctoPrintServer, timeout: float = 15.0) -> None:
    """Wait until OctoPrint has read the printer's heaters, which it does every few seconds."""
    deadline = time.monotonic() + timeout
    while server.request("GET", "/api/printer").get("temperature", {}).get("tool0") is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"OctoPrint reported no temperatures:\n{server.log()}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def moonraker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoonrakerServer]:
    """A real Moonraker with a real, paced Klippy that wants its API key; one per module."""
    with loopback_sockets():
        server = MoonrakerServer(
            tmp_path_factory.mktemp("moonraker"), api_key_required=True, with_klippy=True
        )
        server.start()
    try:
        yield server
    finally:
        server.stop()


class FrameCamera:
    """A webcam on 127.0.0.1 that answers each snapshot request with the next frame."""

    def __init__(self) -> None:
        """Serve nothing until `frames` is set."""
        self.frames: list[bytes] = []
        # Requests answered with HTTP 500 before the frames start, as a camera that is down.
        self.fail_first = 0
        self.requests = 0
        self.url = ""

    @property
    def served(self) -> int:
        """Return how many frames were sent."""
        return max(0, self.requests - self.fail_first)

    async def snapshot(self, _: web.Request) -> web.Response:
        """Answer with the next frame; the last one again once all were sent."""
        self.requests += 1
        if self.requests <= self.fail_first:
            return web.Response(status=500, text="camera down")
        index = min(self.served - 1, len(self.frames) - 1)
        return web.Response(body=self.frames[index], content_type="image/jpeg")


@pytest.fixture
async def frame_camera() -> AsyncIterator[FrameCamera]:
    """Run a camera that serves a synthetic frame sequence; its URL is `snapshot_url`."""
    camera = FrameCamera()
    app = web.Application()
    app.router.add_get("/snapshot", camera.snapshot)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    camera.url = f"http://127.0.0.1:{port}/snapshot"
    yield camera
    await runner.cleanup()


@pytest.fixture
def prints(hass: HomeAssistant, tmp_path: Path) -> Path:
    """A folder of G-code files that Home Assistant may read."""
    folder = tmp_path / "prints"
    folder.mkdir()
    hass.config.allowlist_external_dirs = {str(folder)}
    return folder


@pytest.fixture
async def kitty(
    hass: HomeAssistant, router: ServiceProcess, mqtt_entry: MockConfigEntry
) -> MockConfigEntry:
    """A loaded KITTY entry without printers."""
    return await set_up_kitty(hass, router)


@pytest.fixture
def config_dir(hass: HomeAssistant, tmp_path: Path) -> Path:
    """Give the test's Home Assistant a config folder of its own (the harness shares one)."""
    folder = tmp_path / "config"
    folder.mkdir()
    hass.config.config_dir = str(folder)
    return folder


@pytest.fixture(scope="module")
def cad_model() -> Iterator[FakeOpenAI]:
    """The model a module's CAD service asks to read prompts: scripted per module."""
    yield from served(FakeOpenAI(api_key=CAD_MODEL_KEY))


@pytest.fixture(scope="module")
def rag_model() -> Iterator[FakeOpenAI]:
    """The model a module's knowledge service writes project summaries with."""
    fake = FakeOpenAI(api_key=RAG_MODEL_KEY)
    fake.respond_with(summarizes_notes)
    yield from served(fake)
