"""The runner's API from a service author's side, run in-process on real peers."""

import asyncio
from collections.abc import Iterator
import io
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, Field
import pytest

from kittyai.catalog import ServiceName
from kittyai.contract import AVAILABILITY, INFO
from kittyai.http_server import read_model
from kittyai.logs import JsonFormatter, SecretRedactor
from kittyai.options import MqttOptions, ServiceOptions
from kittyai.service import Service, ServiceRuntime, running
from tests.helpers.broker import MosquittoBroker
from tests.helpers.net import free_port
from tests.lib.mqtt_probe import MqttProbe, on

STATE_TOPIC = "kitty/cad/test/state"


class GreeterOptions(ServiceOptions):
    greeting: str = "Hello"


class Greeting(BaseModel):
    name: str = Field(min_length=1)


@pytest.fixture
def json_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Capture the root logger's output through the real JSON formatter."""
    monkeypatch.delenv("SUPERVISOR_TOKEN", raising=False)
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter(ServiceName.CAD, SecretRedactor()))
    logging.getLogger().addHandler(handler)
    yield buffer
    logging.getLogger().removeHandler(handler)


async def test_a_service_adds_routes_tasks_state_and_cleanups(
    tmp_path: Path, mqtt_broker: MosquittoBroker, json_log: io.StringIO
) -> None:
    stopped: list[str] = []
    ticking = asyncio.Event()

    async def setup(runtime: ServiceRuntime[GreeterOptions]) -> None:
        async def greet(request: web.Request) -> web.Response:
            greeting = await read_model(request, Greeting)
            return web.json_response({"text": f"{runtime.options.greeting}, {greeting.name}"})

        async def fail(_request: web.Request) -> web.Response:
            raise RuntimeError("boom")

        async def tick() -> None:
            ticking.set()
            try:
                await asyncio.Event().wait()
            finally:
                stopped.append("background task")

        async def crash() -> None:
            raise ValueError("bad input")

        async def close() -> None:
            stopped.append("stop callback")

        runtime.app.router.add_post("/api/greet", greet)
        runtime.app.router.add_get("/api/fail", fail)
        runtime.create_background_task(tick(), "tick")
        runtime.create_background_task(crash(), "crash")
        runtime.mqtt.set_retained(STATE_TOPIC, "ready")
        runtime.on_stop(close)

    service = Service(name=ServiceName.CAD, options_model=GreeterOptions, setup=setup)
    options = GreeterOptions(
        bind="127.0.0.1",
        port=free_port(),
        mqtt=MqttOptions(port=mqtt_broker.port),
        greeting="Ahoy",
    )
    async with MqttProbe(mqtt_broker.port, "kitty/cad/#") as probe:
        async with running(service, options, tmp_path, redactor=SecretRedactor()) as runtime:
            await probe.expect(on(STATE_TOPIC, "ready"))
            await probe.expect(on(INFO.topic(ServiceName.CAD)))
            await ticking.wait()
            responses = await call_api(
                f"http://127.0.0.1:{runtime.port}", runtime.identity.api_token
            )
        await probe.expect(on(AVAILABILITY.topic(ServiceName.CAD), "offline"))

    # Background tasks end before stop callbacks run, so callbacks may close what tasks use.
    assert stopped == ["background task", "stop callback"]
    greeted, bad_json, invalid, failed = responses
    assert greeted == (200, {"text": "Ahoy, Ada"})
    assert bad_json[0] == 400
    assert bad_json[1]["error"] == {
        "code": "invalid_json",
        "message": "The request body is not valid JSON",
    }
    assert invalid[0] == 422
    assert invalid[1]["error"]["code"] == "invalid_request"
    assert invalid[1]["error"]["message"].startswith("name: String should have at least 1")
    assert failed == (
        500,
        {
            "error": {"code": "internal_error", "message": "Internal server error"},
            "correlation_id": "req-500",
        },
    )

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    [unhandled] = [line for line in lines if line["msg"].startswith("Unhandled error")]
    assert unhandled["correlation_id"] == "req-500"
    assert "RuntimeError: boom" in unhandled["exc_info"]
    [crashed] = [line for line in lines if line["msg"].startswith("Background task")]
    assert crashed["msg"] == "Background task kitty-cad-crash failed"
    assert "ValueError: bad input" in crashed["exc_info"]
    assert (tmp_path / "api_token").stat().st_mode & 0o777 == 0o600


async def call_api(url: str, token: str) -> list[tuple[int, Any]]:
    results = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        for method, path, body, request_id in (
            ("POST", "/api/greet", b'{"name": "Ada"}', "req-ok"),
            ("POST", "/api/greet", b"{not json", "req-400"),
            ("POST", "/api/greet", b'{"name": ""}', "req-422"),
            ("GET", "/api/fail", None, "req-500"),
        ):
            async with session.request(
                method, f"{url}{path}", data=body, headers={"X-Request-ID": request_id}
            ) as response:
                results.append((response.status, await response.json()))
    return results
