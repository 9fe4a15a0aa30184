"""The HTTP scaffold of a real service process: auth, JSON errors, request ids, logs."""

import json
from typing import Any

import aiohttp

from kittyai.catalog import ServiceName
from kittyai.contract import ServiceInfo
from tests.helpers.services import ServiceProcess
from tests.lib.conftest import StartService

MQTT_PASSWORD = "mqtt-pw-never-logged-7391"


def log_lines(process: ServiceProcess) -> list[dict[str, Any]]:
    """Return the service's log, asserting every line is one JSON object."""
    return [json.loads(line) for line in process.log().splitlines() if line.strip()]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_health_is_open(start_service: StartService) -> None:
    router = await start_service(ServiceName.ROUTER)
    async with aiohttp.ClientSession() as session, session.get(f"{router.url}/health") as response:
        assert response.status == 200
        assert await response.json() == {
            "status": "ok",
            "service": "router",
            "version": "0.1.0",
            "mqtt": "connected",
        }


async def test_health_says_disabled_without_a_broker(start_service: StartService) -> None:
    rag = await start_service(ServiceName.RAG, mqtt=False)
    async with aiohttp.ClientSession() as session, session.get(f"{rag.url}/health") as response:
        assert (await response.json())["mqtt"] == "disabled"
    assert any(
        line["msg"] == "No MQTT broker configured; MQTT is disabled" for line in log_lines(rag)
    )


async def test_everything_but_health_needs_the_token(start_service: StartService) -> None:
    cad = await start_service(ServiceName.CAD)
    async with aiohttp.ClientSession() as session:
        for path in ("/api/info", "/metrics"):
            for headers in ({}, bearer("wrong-token"), {"Authorization": "Basic dGVzdA=="}):
                async with session.get(f"{cad.url}{path}", headers=headers) as response:
                    assert response.status == 401, (path, headers)
                    assert response.headers["WWW-Authenticate"] == "Bearer"
                    body = await response.json()
                assert body["error"]["code"] == "unauthorized"
                assert body["correlation_id"] == response.headers["X-Request-ID"]


async def test_info_and_metrics_with_the_token(start_service: StartService) -> None:
    router = await start_service(ServiceName.ROUTER)
    async with aiohttp.ClientSession(headers=bearer(router.token)) as session:
        async with session.get(f"{router.url}/api/info") as response:
            assert response.status == 200
            info = ServiceInfo.model_validate(await response.json())
        async with session.get(f"{router.url}/metrics") as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            metrics = await response.text()

    assert info.service is ServiceName.ROUTER
    assert "kitty_mqtt_connected 1.0" in metrics
    assert "kitty_mqtt_reconnects_total 0.0" in metrics
    assert 'kitty_http_requests_total{method="GET",route="/api/info",status="200"} 1.0' in metrics
    assert "kitty_http_request_duration_seconds_bucket" in metrics


async def test_unknown_route_and_wrong_method_are_json(start_service: StartService) -> None:
    orchestrator = await start_service(ServiceName.ORCHESTRATOR)
    async with aiohttp.ClientSession(headers=bearer(orchestrator.token)) as session:
        async with session.get(f"{orchestrator.url}/api/nothing-here") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
        async with session.post(f"{orchestrator.url}/api/info") as response:
            assert response.status == 405
            assert response.headers["Allow"] == "GET,HEAD"
            assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_request_id_is_echoed_and_logged(start_service: StartService) -> None:
    router = await start_service(ServiceName.ROUTER)
    async with aiohttp.ClientSession(headers=bearer(router.token)) as session:
        async with session.get(
            f"{router.url}/api/info", headers={"X-Request-ID": "ha-req.42"}
        ) as response:
            assert response.headers["X-Request-ID"] == "ha-req.42"
        # Unsafe characters are stripped and the id is capped at 64 characters.
        async with session.get(
            f"{router.url}/api/info", headers={"X-Request-ID": 'a b"<c>' + "x" * 100}
        ) as response:
            assert response.headers["X-Request-ID"] == ("abc" + "x" * 100)[:64]
        async with session.get(f"{router.url}/api/info") as response:
            generated = response.headers["X-Request-ID"]
    assert len(generated) == 32

    access = [line for line in log_lines(router) if line["logger"] == "kittyai.http_server.access"]
    assert [line["correlation_id"] for line in access[-3:]] == [
        "ha-req.42",
        ("abc" + "x" * 100)[:64],
        generated,
    ]
    assert access[-1] | {"ts": None, "duration_ms": None} == {
        "ts": None,
        "level": "INFO",
        "logger": "kittyai.http_server.access",
        "msg": access[-1]["msg"],
        "service": "router",
        "correlation_id": generated,
        "method": "GET",
        "path": "/api/info",
        "status": 200,
        "duration_ms": None,
    }


async def test_secrets_never_reach_the_log(start_service: StartService) -> None:
    router = await start_service(
        ServiceName.ROUTER,
        token="api-token-never-logged-5521",
        extra_options={"mqtt": {"host": "127.0.0.1", "port": 1, "password": MQTT_PASSWORD}},
    )
    async with aiohttp.ClientSession() as session:
        # The token travels in a header and in the path; neither may be logged.
        async with session.get(
            f"{router.url}/api/{router.token}", headers=bearer(router.token)
        ) as response:
            assert response.status == 404
        async with session.get(f"{router.url}/health", headers=bearer(MQTT_PASSWORD)):
            pass
    log = router.log()

    assert router.token not in log
    assert MQTT_PASSWORD not in log
    assert "/api/**REDACTED**" in log


async def test_every_secret_of_the_options_is_redacted(start_service: StartService) -> None:
    scoped = "scoped-token-never-logged-7731"
    core_token = "core-token-never-logged-9902"
    orchestrator = await start_service(
        ServiceName.ORCHESTRATOR,
        extra_options={
            "scoped_tokens": [{"name": "dashboard", "token": scoped, "scopes": "runs:read"}],
            "home_assistant": {"url": "http://127.0.0.1:1", "token": core_token},
        },
    )
    async with aiohttp.ClientSession() as session:
        for secret in (scoped, core_token):
            async with session.get(
                f"{orchestrator.url}/api/{secret}", headers=bearer(scoped)
            ) as response:
                assert response.status == 404
    log = orchestrator.log()

    assert scoped not in log
    assert core_token not in log
    assert log.count("/api/**REDACTED**") >= 2
