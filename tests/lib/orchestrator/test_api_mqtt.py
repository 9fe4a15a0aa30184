"""The orchestrator on MQTT, as Home Assistant sees it: a real process and a real Mosquitto.

Every run event goes out on `kitty/runs/<id>/event`; the statistics the sensors
show stay retained on `kitty/orchestrator/runs`.
"""

import asyncio
from collections.abc import Callable

import aiohttp
import aiomqtt

from kittyai.catalog import ServiceName
from kittyai.contract import RUN_EVENT, RUN_STATS
from kittyai.contract.orchestrator import RunEvent, RunState, RunStats
from tests.helpers.broker import MosquittoBroker
from tests.lib.conftest import StartService
from tests.lib.mqtt_probe import MqttProbe, text
from tests.lib.orchestrator.process import STARTUP_TIMEOUT_S, OrchestratorApi


def stats_where(condition: Callable[[RunStats], bool]) -> Callable[[aiomqtt.Message], bool]:
    def match(message: aiomqtt.Message) -> bool:
        return message.topic.value == RUN_STATS.pattern and condition(
            RunStats.model_validate_json(text(message))
        )

    return match


def events_on(probe: MqttProbe, run_id: str) -> list[RunEvent]:
    topic = RUN_EVENT.topic_for(run_id=run_id)
    return [
        RunEvent.model_validate_json(text(message))
        for message in probe.messages
        if message.topic.value == topic
    ]


async def test_events_and_stats_reach_home_assistant(
    start_service: StartService, mqtt_broker: MosquittoBroker, session: aiohttp.ClientSession
) -> None:
    async with MqttProbe(mqtt_broker.port, "kitty/#") as probe:
        process = await start_service(ServiceName.ORCHESTRATOR)
        api = OrchestratorApi(process, session)
        await probe.expect(stats_where(lambda stats: stats.total == 0 and stats.active == 0))

        run = await api.create_noop(steps=2, approval=True)
        waiting = await probe.expect(stats_where(lambda stats: stats.awaiting_approval != []))
        stats = RunStats.model_validate_json(text(waiting))
        assert [awaiting.run_id for awaiting in stats.awaiting_approval] == [run.id]
        assert stats.awaiting_approval[0].reason
        assert stats.active == 1

        await api.approve(run.id)
        done = await probe.expect(
            stats_where(lambda stats: stats.last_result is not None and stats.active == 0)
        )
        stats = RunStats.model_validate_json(text(done))
        assert stats.awaiting_approval == []
        assert stats.last_result is not None
        assert (stats.last_result.run_id, stats.last_result.state) == (run.id, RunState.SUCCEEDED)

        # Every event of the run, in order, on the run's own topic.
        stored = await api.events_of(run.id)
        await probe.expect(
            lambda message: (
                message.topic.value == RUN_EVENT.topic_for(run_id=run.id)
                and RunEvent.model_validate_json(text(message)).seq == stored[-1].seq
            )
        )
        assert events_on(probe, run.id) == stored

    # Retained: a sensor that subscribes later sees where things stand.
    async with MqttProbe(mqtt_broker.port, RUN_STATS.pattern) as late:
        retained = await late.expect(stats_where(lambda stats: stats.total == 1))
        assert retained.retain


async def test_a_restart_sends_no_event_twice(
    start_service: StartService, mqtt_broker: MosquittoBroker, session: aiohttp.ClientSession
) -> None:
    async with MqttProbe(mqtt_broker.port, RUN_EVENT.wildcard) as probe:
        process = await start_service(ServiceName.ORCHESTRATOR)
        api = OrchestratorApi(process, session)
        first = await api.create_noop(steps=1)
        await api.wait_for(first.id, RunState.SUCCEEDED)
        last_seq = (await api.events_of(first.id))[-1].seq
        await probe.expect(
            lambda message: RunEvent.model_validate_json(text(message)).seq == last_seq
        )
        sent = len(events_on(probe, first.id))

        assert process.stop() == 0
        await asyncio.to_thread(process.start, STARTUP_TIMEOUT_S)
        second = await api.create_noop(steps=1)
        await api.wait_for(second.id, RunState.SUCCEEDED)
        second_events = await api.events_of(second.id)
        await probe.expect(
            lambda message: RunEvent.model_validate_json(text(message)).seq == second_events[-1].seq
        )

        # Events go out in order, so a repeat of the first run's would have come first.
        assert len(events_on(probe, first.id)) == sent
        assert events_on(probe, second.id) == second_events
