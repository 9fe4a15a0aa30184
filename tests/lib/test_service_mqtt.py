"""A real service process on a real broker: availability, info, will, reconnects."""

import asyncio
import signal

from kittyai.catalog import ServiceName
from kittyai.contract import AVAILABILITY, HA_STATUS_TOPIC, INFO, ServiceInfo
from tests.helpers.broker import MosquittoBroker
from tests.lib.conftest import StartService
from tests.lib.mqtt_probe import MqttProbe, on, text

ROUTER = ServiceName.ROUTER
ONLINE = on(AVAILABILITY.topic(ROUTER), "online")
OFFLINE = on(AVAILABILITY.topic(ROUTER), "offline")


async def test_online_and_info_are_retained(
    mqtt_broker: MosquittoBroker, start_service: StartService
) -> None:
    router = await start_service(ROUTER)

    # A subscriber arriving after the fact gets both from the broker's retained store.
    async with MqttProbe(mqtt_broker.port, "kitty/router/#") as probe:
        online = await probe.expect(ONLINE)
        info_message = await probe.expect(on(INFO.topic(ROUTER)))

    assert online.retain
    assert info_message.retain
    info = ServiceInfo.model_validate_json(text(info_message))
    assert info.service is ROUTER
    assert info.instance_id == (router.data_dir / "instance_id").read_text().strip()


async def test_sigkill_makes_the_broker_send_the_will(
    mqtt_broker: MosquittoBroker, start_service: StartService
) -> None:
    router = await start_service(ROUTER)
    async with MqttProbe(mqtt_broker.port, AVAILABILITY.topic(ROUTER)) as probe:
        await probe.expect(ONLINE)
        probe.clear()

        router.kill()

        await probe.expect(OFFLINE)
    async with MqttProbe(mqtt_broker.port, AVAILABILITY.topic(ROUTER)) as late:
        assert (await late.expect(OFFLINE)).retain


async def test_sigterm_publishes_offline_and_exits_zero(
    mqtt_broker: MosquittoBroker, start_service: StartService
) -> None:
    router = await start_service(ROUTER)
    async with MqttProbe(mqtt_broker.port, AVAILABILITY.topic(ROUTER)) as probe:
        await probe.expect(ONLINE)
        probe.clear()

        assert await asyncio.to_thread(router.stop) == 0

        await probe.expect(OFFLINE)
    assert "Published offline" in router.log()


async def test_sigint_stops_cleanly_too(
    mqtt_broker: MosquittoBroker, start_service: StartService
) -> None:
    cad = await start_service(ServiceName.CAD)

    assert await asyncio.to_thread(cad._signal, signal.SIGINT) == 0

    async with MqttProbe(mqtt_broker.port, AVAILABILITY.topic(ServiceName.CAD)) as probe:
        await probe.expect(on(AVAILABILITY.topic(ServiceName.CAD), "offline"))


async def test_broker_restart_reconnects_and_republishes(
    mqtt_broker: MosquittoBroker, start_service: StartService
) -> None:
    router = await start_service(ROUTER)
    async with MqttProbe(mqtt_broker.port, "kitty/router/#") as probe:
        await probe.expect(ONLINE)

    # Without persistence the restarted broker has forgotten every retained message.
    await asyncio.to_thread(mqtt_broker.restart)

    async with MqttProbe(mqtt_broker.port, "kitty/router/#") as probe:
        await probe.expect(ONLINE, timeout=20)
        await probe.expect(on(INFO.topic(ROUTER)), timeout=20)
    log = router.log()
    assert log.count("Lost the MQTT broker") == 1, log
    assert "Connected to MQTT broker" in log


async def test_home_assistant_online_makes_it_republish(
    mqtt_broker: MosquittoBroker, start_service: StartService
) -> None:
    await start_service(ROUTER)
    async with MqttProbe(mqtt_broker.port, "kitty/router/#") as probe:
        await probe.expect(on(INFO.topic(ROUTER)))
        probe.clear()

        await probe.publish(HA_STATUS_TOPIC, "online")

        # Live deliveries (retain flag off): the service sent them again just now.
        assert not (await probe.expect(ONLINE)).retain
        assert not (await probe.expect(on(INFO.topic(ROUTER)))).retain
