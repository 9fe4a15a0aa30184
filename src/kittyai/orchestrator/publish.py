"""The orchestrator on MQTT: every run event, and the retained run statistics.

Each `RunEvent` goes out on `kitty/runs/<run_id>/event` (QoS 1); Home Assistant
fires `kitty_run_event` from it. After every change of a run's state, and when a
step starts or stops waiting for approval, the statistics the sensors show are
counted again from the store and kept retained on `kitty/orchestrator/runs`.

Events are read back from the engine's store from a cursor kept in the data dir,
so the events of the last moments before a crash still go out after the restart
(QoS 1 is at-least-once: a few may go out twice; `seq` tells them apart).
"""

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
import logging
import os
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from kittyai.backoff import Backoff
from kittyai.contract import RUN_EVENT, RUN_STATS
from kittyai.contract.orchestrator import RunEvent, RunEventType, RunStats, StepState
from kittyai.mqtt import MqttLink
from kittyai.orchestrator.engine import RunEngine

_LOGGER = logging.getLogger(__name__)

CURSOR_FILE = "mqtt_published_seq"
# However many events a burst brings, the stats are counted at most this often.
STATS_MIN_INTERVAL_S = 0.25
# The cursor is saved at most this often; a crash re-sends at most this much.
CURSOR_SAVE_INTERVAL_S = 1.0

type CollectStats = Callable[[], Awaitable[RunStats]]


def changes_stats(event: RunEvent) -> bool:
    """Return whether `event` may change what the statistics say."""
    # Leaving a gate changes the run's state too, so it comes as a run event.
    return event.type is RunEventType.RUN or event.step_state is StepState.AWAITING_APPROVAL


class RunPublisher:
    """Sends the engine's events and statistics to MQTT for the life of the service."""

    def __init__(
        self, engine: RunEngine, collect_stats: CollectStats, mqtt: MqttLink, data_dir: Path
    ) -> None:
        """Publish `engine`'s events and the stats on `mqtt`; save the cursor in `data_dir`."""
        self._engine = engine
        self._collect_stats = collect_stats
        self._mqtt = mqtt
        self._cursor_path = data_dir / CURSOR_FILE
        self._stats_due = asyncio.Event()
        self._published = 0
        self._saved = 0

    async def run_forever(self) -> None:
        """Publish the statistics now, then every event and every change of them."""
        self._published = self._saved = await asyncio.to_thread(self._load_cursor)
        self._stats_due.set()
        tasks = [
            asyncio.create_task(self._publish_stats_forever()),
            asyncio.create_task(self._save_cursor_forever()),
        ]
        try:
            await self._publish_events_forever()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # On a clean stop nothing is sent twice after the restart.
            await asyncio.to_thread(self._save_cursor)

    async def _publish_events_forever(self) -> None:
        backoff = Backoff(initial=1.0, maximum=60.0)
        while True:
            try:
                # Ends when the engine stops.
                async for event in self._engine.events(after=self._published):
                    self._mqtt.publish_event(
                        RUN_EVENT.topic_for(run_id=event.run_id), event, qos=RUN_EVENT.qos
                    )
                    self._published = event.seq
                    backoff.reset()
                    if changes_stats(event):
                        self._stats_due.set()
            except (OSError, SQLAlchemyError) as err:
                # The database is away (PostgreSQL restarting): resume from the cursor.
                delay = backoff.next_delay()
                _LOGGER.warning("Cannot read run events, again in %.0f s: %s", delay, err)
                await asyncio.sleep(delay)
            else:
                return

    async def _publish_stats_forever(self) -> None:
        backoff = Backoff(initial=1.0, maximum=60.0)
        while True:
            await self._stats_due.wait()
            self._stats_due.clear()
            try:
                stats = await self._collect_stats()
            except (OSError, SQLAlchemyError) as err:
                delay = backoff.next_delay()
                _LOGGER.warning("Cannot count the runs, again in %.0f s: %s", delay, err)
                self._stats_due.set()
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            self._mqtt.set_retained(RUN_STATS.pattern, stats, qos=RUN_STATS.qos)
            await asyncio.sleep(STATS_MIN_INTERVAL_S)

    async def _save_cursor_forever(self) -> None:
        while True:
            await asyncio.sleep(CURSOR_SAVE_INTERVAL_S)
            if self._published != self._saved:
                await asyncio.to_thread(self._save_cursor)

    def _load_cursor(self) -> int:
        with suppress(FileNotFoundError, ValueError):
            return max(0, int(self._cursor_path.read_text(encoding="ascii")))
        return 0

    def _save_cursor(self) -> None:
        seq = self._published
        partial = self._cursor_path.with_suffix(".partial")
        try:
            partial.write_text(str(seq), encoding="ascii")
            os.replace(partial, self._cursor_path)
        except OSError as err:
            _LOGGER.warning("Cannot save the MQTT event cursor: %s", err)
            return
        self._saved = seq
