"""Services under a (fake, protocol-faithful) Supervisor: broker lookup and discovery."""

import asyncio
import time

import aiohttp
from pydantic import SecretStr
import pytest

from kittyai.catalog import ServiceName
from kittyai.contract import AVAILABILITY
from kittyai.discovery import DiscoveryAnnouncer
from kittyai.supervisor import MqttService, SupervisorClient, SupervisorError
from tests.helpers.broker import MosquittoBroker
from tests.helpers.net import free_port
from tests.lib.conftest import StartService
from tests.lib.fake_supervisor import APP_HOSTNAME, FakeSupervisor
from tests.lib.mqtt_probe import MqttProbe, on
from tests.lib.waiting import wait_until


def supervisor_env(supervisor: FakeSupervisor) -> dict[str, str]:
    return {"SUPERVISOR_TOKEN": supervisor.token, "SUPERVISOR_URL": supervisor.url}


async def test_router_takes_the_broker_from_the_supervisor_and_announces_itself(
    mqtt_broker: MosquittoBroker, fake_supervisor: FakeSupervisor, start_service: StartService
) -> None:
    router = await start_service(
        ServiceName.ROUTER, mqtt=False, env=supervisor_env(fake_supervisor)
    )

    async with MqttProbe(mqtt_broker.port, AVAILABILITY.topic(ServiceName.ROUTER)) as probe:
        await probe.expect(on(AVAILABILITY.topic(ServiceName.ROUTER), "online"))
    await wait_until(lambda: fake_supervisor.announced)
    [(message_uuid, announcement)] = fake_supervisor.announced.items()
    assert announcement == {
        "service": "kitty",
        "config": {"host": APP_HOSTNAME, "port": router.port, "token": router.token},
    }

    assert await asyncio.to_thread(router.stop) == 0

    assert fake_supervisor.withdrawn == [message_uuid]
    log = router.log()
    assert fake_supervisor.token not in log
    assert fake_supervisor.mqtt_password not in log
    assert router.token not in log


async def test_other_services_do_not_announce(
    mqtt_broker: MosquittoBroker, fake_supervisor: FakeSupervisor, start_service: StartService
) -> None:
    rag = await start_service(ServiceName.RAG, mqtt=False, env=supervisor_env(fake_supervisor))
    async with MqttProbe(mqtt_broker.port, AVAILABILITY.topic(ServiceName.RAG)) as probe:
        await probe.expect(on(AVAILABILITY.topic(ServiceName.RAG), "online"))

    assert await asyncio.to_thread(rag.stop) == 0

    assert fake_supervisor.calls == ["GET /services/mqtt"]


async def test_discovery_is_retried_until_the_supervisor_accepts(
    fake_supervisor: FakeSupervisor,
) -> None:
    fake_supervisor.refuse_discovery = 1
    async with aiohttp.ClientSession() as session:
        supervisor = SupervisorClient(session, fake_supervisor.token, fake_supervisor.url)
        announcer = DiscoveryAnnouncer(supervisor, port=8770, api_token="t")
        announcer.start()
        await wait_until(lambda: fake_supervisor.announced)
        await announcer.stop()

    assert fake_supervisor.calls.count("POST /discovery") == 2
    assert fake_supervisor.withdrawn == list(fake_supervisor.announced)


async def test_client_parses_the_envelope(fake_supervisor: FakeSupervisor) -> None:
    async with aiohttp.ClientSession() as session:
        supervisor = SupervisorClient(session, fake_supervisor.token, fake_supervisor.url)

        service = await supervisor.get_mqtt_service()
        info = await supervisor.get_self_info()
        with pytest.raises(SupervisorError, match="HTTP 400: Discovery message not found"):
            await supervisor.remove_discovery("unknown")

    assert service == MqttService(
        host="127.0.0.1",
        port=fake_supervisor.mqtt_port,
        ssl=False,
        username="addons",
        password=SecretStr(fake_supervisor.mqtt_password),
        protocol="3.1.1",
    )
    assert info.hostname == APP_HOSTNAME


async def test_client_reports_a_refused_token(fake_supervisor: FakeSupervisor) -> None:
    async with aiohttp.ClientSession() as session:
        supervisor = SupervisorClient(session, "not-the-token", fake_supervisor.url)
        with pytest.raises(SupervisorError, match="HTTP 401: Invalid token for access"):
            await supervisor.get_self_info()


async def test_client_reports_an_unreachable_supervisor() -> None:
    async with aiohttp.ClientSession() as session:
        supervisor = SupervisorClient(session, "token", f"http://127.0.0.1:{free_port()}")
        with pytest.raises(SupervisorError, match="Cannot reach the Supervisor"):
            await supervisor.get_mqtt_service()


async def test_client_exists_only_under_a_supervisor() -> None:
    async with aiohttp.ClientSession() as session:
        assert SupervisorClient.from_env(session, {}) is None
        assert SupervisorClient.from_env(session, {"SUPERVISOR_TOKEN": "x"}) is not None


async def test_stopping_during_retries_is_quick(fake_supervisor: FakeSupervisor) -> None:
    fake_supervisor.refuse_discovery = 100
    async with aiohttp.ClientSession() as session:
        supervisor = SupervisorClient(session, fake_supervisor.token, fake_supervisor.url)
        announcer = DiscoveryAnnouncer(supervisor, port=8770, api_token="t")
        announcer.start()
        await wait_until(lambda: "POST /discovery" in fake_supervisor.calls)
        started = time.monotonic()

        await announcer.stop()

    assert time.monotonic() - started < 0.5
    assert not fake_supervisor.announced
    assert not fake_supervisor.withdrawn
