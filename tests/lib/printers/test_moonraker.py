"""MoonrakerClient against a real Moonraker 0.11, alone and with a real, paced Klippy.

The servers are shared per module: one Moonraker without Klippy that wants the API
key, one with Klippy that trusts 127.0.0.1. Jobs are G-code of dwells and short
moves, so they take a few seconds of wall-clock time and never home.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
import socket
import traceback

import aiohttp
import pytest

from kittyai.printers.base import (
    PrinterAuthError,
    PrinterBusyError,
    PrinterConnectionError,
    PrinterFileNotFoundError,
    PrinterKind,
    PrinterState,
    PrinterStatus,
    Temperature,
)
from kittyai.printers.moonraker import MoonrakerClient
from tests.helpers.gcode import write_klippy_gcode
from tests.helpers.moonraker import SNAPSHOT_PATH, STREAM_PATH, MoonrakerServer
from tests.helpers.net import free_port, loopback_sockets
from tests.lib.waiting import wait_until

WRONG_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def moonraker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoonrakerServer]:
    """Moonraker without Klippy, trusting nobody: every call needs the API key."""
    with loopback_sockets():
        server = MoonrakerServer(
            tmp_path_factory.mktemp("moonraker"), api_key_required=True, with_klippy=False
        )
        server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def printer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoonrakerServer]:
    """Moonraker with a paced Klippy, trusting 127.0.0.1: no key needed."""
    with loopback_sockets():
        server = MoonrakerServer(
            tmp_path_factory.mktemp("printer"), api_key_required=False, with_klippy=True
        )
        server.start()
    yield server
    server.stop()


@pytest.fixture
async def client(
    moonraker: MoonrakerServer, session: aiohttp.ClientSession
) -> AsyncIterator[MoonrakerClient]:
    client = MoonrakerClient(session, moonraker.url, moonraker.api_key)
    yield client
    await client.close()


@pytest.fixture
async def printer_client(
    printer: MoonrakerServer, session: aiohttp.ClientSession
) -> AsyncIterator[MoonrakerClient]:
    """A client of the Klippy printer; a job a failed test left running is cancelled."""
    client = MoonrakerClient(session, printer.url)
    yield client
    try:
        if (await client.status()).busy:
            await client.cancel()
    finally:
        await client.close()


class Recorder:
    """A `listen` listener that keeps every status it is given."""

    def __init__(self) -> None:
        self.statuses: list[PrinterStatus] = []

    async def __call__(self, status: PrinterStatus) -> None:
        self.statuses.append(status)

    def states(self) -> list[PrinterState]:
        """Return the states seen, each run of equal states once."""
        states: list[PrinterState] = []
        for status in self.statuses:
            if not states or states[-1] is not status.state:
                states.append(status.state)
        return states

    def saw(self, state: PrinterState) -> bool:
        return any(status.state is state for status in self.statuses)


@contextmanager
def listening(client: MoonrakerClient, recorder: Recorder) -> Iterator[asyncio.Task[None]]:
    task = asyncio.create_task(client.listen(recorder))
    try:
        yield task
    finally:
        task.cancel()


def assert_no_key(err: BaseException, key: str) -> None:
    assert key not in "".join(traceback.format_exception(err))


async def test_info_names_the_server_and_its_webcam(
    moonraker: MoonrakerServer, client: MoonrakerClient
) -> None:
    """Kind, version, the instance id that outlives restarts, absolute webcam URLs."""
    info = await client.info()

    instance_uuid = (moonraker.data_dir / ".moonraker.uuid").read_text().strip()
    assert info.kind is PrinterKind.MOONRAKER
    assert info.unique_id == instance_uuid
    assert info.version == "0.11.0"
    # Without Klippy there is no printer host name to show: the address stands in.
    assert info.name == "127.0.0.1"
    # A frontend serves Moonraker's relative webcam URLs on the host's default port.
    assert info.stream_url == f"http://127.0.0.1{STREAM_PATH}"
    assert info.snapshot_url == f"http://127.0.0.1{SNAPSHOT_PATH}"


async def test_status_without_klippy_is_disconnected(client: MoonrakerClient) -> None:
    """Moonraker answers, but no printer is behind it: nothing to pause or cancel."""
    status = await client.status()

    assert status.state is PrinterState.DISCONNECTED
    assert not status.busy
    assert status.file is None
    with pytest.raises(PrinterBusyError, match="disconnected"):
        await client.pause()
    with pytest.raises(PrinterBusyError, match="disconnected"):
        await client.cancel()


async def test_upload_then_list_files(client: MoonrakerClient, tmp_path: Path) -> None:
    """An uploaded file is listed with its size; it cannot start without a printer."""
    job = write_klippy_gcode(tmp_path / "local-name.gcode", 2)
    before = datetime.now(UTC)

    stored = await client.upload(job, "brackets/left.gcode")
    files = await client.list_files()

    assert stored.name == "brackets/left.gcode"
    assert stored.size == job.stat().st_size
    listed = next(file for file in files if file.name == "brackets/left.gcode")
    assert listed.size == job.stat().st_size
    assert listed.modified is not None
    assert listed.modified > before - timedelta(seconds=5)
    with pytest.raises(PrinterBusyError, match="disconnected"):
        await client.start("brackets/left.gcode")


async def test_wrong_or_missing_key_is_rejected(
    moonraker: MoonrakerServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A wrong key and no key fail as authentication errors, for calls and uploads alike."""
    assert moonraker.api_key is not None
    job = write_klippy_gcode(tmp_path / "job.gcode", 1)
    wrong = MoonrakerClient(session, moonraker.url, WRONG_KEY)
    missing = MoonrakerClient(session, moonraker.url)
    try:
        with pytest.raises(PrinterAuthError, match="rejected the API key") as info_error:
            await wrong.info()
        with pytest.raises(PrinterAuthError, match="rejected the API key") as upload_error:
            await wrong.upload(job)
        with pytest.raises(PrinterAuthError, match="requires an API key"):
            await missing.status()
        with pytest.raises(PrinterAuthError, match="requires an API key"):
            await missing.upload(job)
    finally:
        await wrong.close()
        await missing.close()

    for err in (info_error.value, upload_error.value):
        assert_no_key(err, WRONG_KEY)
        assert_no_key(err, moonraker.api_key)


async def test_unreachable_server(session: aiohttp.ClientSession) -> None:
    client = MoonrakerClient(session, f"http://127.0.0.1:{free_port()}", WRONG_KEY)

    with pytest.raises(PrinterConnectionError, match="Cannot reach") as error:
        await client.status()

    assert_no_key(error.value, WRONG_KEY)


async def test_listen_ends_when_moonraker_goes_away_and_reconnects_after(
    moonraker: MoonrakerServer, client: MoonrakerClient
) -> None:
    """The listener hears the printer is disconnected; losing Moonraker ends `listen`."""
    recorder = Recorder()
    unique_id = (await client.info()).unique_id
    with listening(client, recorder) as task:
        await wait_until(lambda: recorder.saw(PrinterState.DISCONNECTED))
        await asyncio.to_thread(moonraker.stop)
        try:
            with pytest.raises(PrinterConnectionError, match="Lost the connection"):
                await asyncio.wait_for(task, timeout=10)
        finally:
            await asyncio.to_thread(moonraker.start)

    # The next call opens a new connection; the server is the same one.
    assert (await client.info()).unique_id == unique_id
    assert (await client.status()).state is PrinterState.DISCONNECTED


async def test_ready_printer_reports_host_and_heaters(printer_client: MoonrakerClient) -> None:
    """With Klippy ready the printer is named after its host and shows both heaters."""
    info = await printer_client.info()
    status = await printer_client.status()

    assert info.name == socket.gethostname()
    assert status.state in {PrinterState.IDLE, PrinterState.COMPLETE, PrinterState.CANCELLED}
    # File-output Klippy reads no thermistor: 0 °C, but reported like any reading.
    assert status.nozzle == Temperature(actual=0.0, target=0.0)
    assert status.bed == Temperature(actual=0.0, target=0.0)


async def test_job_prints_pauses_resumes_and_cancels(
    printer_client: MoonrakerClient, tmp_path: Path
) -> None:
    """A whole job as a user drives it, each change also pushed to the listener."""
    await printer_client.upload(write_klippy_gcode(tmp_path / "tower.gcode", 60))
    recorder = Recorder()

    with listening(printer_client, recorder):
        printing = await printer_client.start("tower.gcode")
        assert printing.state is PrinterState.PRINTING
        assert printing.file == "tower.gcode"
        with pytest.raises(PrinterBusyError, match="printing"):
            await printer_client.start("tower.gcode")

        # Pushed updates carry the job's progress and the heaters it switched on.
        await wait_until(
            lambda: any(
                status.state is PrinterState.PRINTING
                and (status.progress or 0) > 0
                and (status.print_time_s or 0) > 1
                for status in recorder.statuses
            )
        )
        running = await printer_client.status()
        assert 0 < (running.progress or 0) < 100
        assert running.time_left_s is not None
        assert running.time_left_s > 0
        assert running.nozzle.target == 200
        assert running.bed.target == 60

        paused = await printer_client.pause()
        assert paused.state is PrinterState.PAUSED
        progress_at_pause = paused.progress
        await asyncio.sleep(1)
        assert (await printer_client.status()).progress == progress_at_pause

        resumed = await printer_client.resume()
        assert resumed.state is PrinterState.PRINTING

        cancelled = await printer_client.cancel()
        assert cancelled.state is PrinterState.CANCELLED
        assert cancelled.file == "tower.gcode"
        await wait_until(lambda: recorder.saw(PrinterState.CANCELLED))

    states = recorder.states()
    assert states[-4:] == [
        PrinterState.PRINTING,
        PrinterState.PAUSED,
        PrinterState.PRINTING,
        PrinterState.CANCELLED,
    ]


async def test_short_job_runs_to_complete(printer_client: MoonrakerClient, tmp_path: Path) -> None:
    """A job runs out by itself; before any progress, time left is the slicer's estimate."""
    await printer_client.upload(
        write_klippy_gcode(tmp_path / "clip.gcode", 3, slicer_progress=True)
    )
    recorder = Recorder()

    with listening(printer_client, recorder):
        await printer_client.start("clip.gcode")
        await wait_until(lambda: recorder.saw(PrinterState.COMPLETE), timeout=20)

    at_zero = [
        status
        for status in recorder.statuses
        if status.state is PrinterState.PRINTING and status.progress == 0
    ]
    assert at_zero
    for status in at_zero:
        assert status.time_left_s == pytest.approx(3 - (status.print_time_s or 0), abs=0.1)

    done = await printer_client.status()
    assert done.state is PrinterState.COMPLETE
    assert done.file == "clip.gcode"
    assert done.progress == 100
    assert done.print_time_s is not None
    assert done.print_time_s > 1
    assert done.time_left_s is None
    assert done.nozzle.target == 0


async def test_targets_are_set_and_read_back(printer_client: MoonrakerClient) -> None:
    """Preheating sets both targets; a heater left out keeps its target."""
    status = await printer_client.set_targets(nozzle=60, bed=40)
    assert (status.nozzle.target, status.bed.target) == (60, 40)

    status = await printer_client.set_targets(bed=0)
    assert (status.nozzle.target, status.bed.target) == (60, 0)
    await printer_client.set_targets(nozzle=0)


async def test_unknown_file_is_not_started(printer_client: MoonrakerClient) -> None:
    before = await printer_client.status()

    with pytest.raises(PrinterFileNotFoundError, match=r"missing\.gcode"):
        await printer_client.start("missing.gcode")

    assert (await printer_client.status()).state is before.state


async def test_emergency_stop_shows_as_error_until_restart(
    printer: MoonrakerServer,
    printer_client: MoonrakerClient,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """An emergency stop is pushed as an error with Klippy's words; nothing can start."""
    await printer_client.upload(write_klippy_gcode(tmp_path / "halted.gcode", 2))
    recorder = Recorder()
    with listening(printer_client, recorder):
        await wait_until(lambda: bool(recorder.statuses))
        try:
            async with session.post(f"{printer.url}/printer/emergency_stop") as response:
                assert response.status == 200
            await wait_until(lambda: recorder.saw(PrinterState.ERROR))

            stopped = await printer_client.status()
            assert stopped.state is PrinterState.ERROR
            assert stopped.message is not None
            assert stopped.message.startswith("Shutdown due to webhooks request")
            with pytest.raises(PrinterBusyError, match="error"):
                await printer_client.start("halted.gcode")
        finally:
            # RESTART, not FIRMWARE_RESTART: without an MCU the latter fails to reset
            # a board and leaves Klippy hung.
            async with session.post(f"{printer.url}/printer/restart") as response:
                assert response.status == 200
        await wait_until(
            lambda: (
                recorder.statuses[-1].state not in {PrinterState.ERROR, PrinterState.DISCONNECTED}
            ),
            timeout=30,
        )


async def test_listen_follows_klippy_going_away_and_coming_back(
    printer: MoonrakerServer, printer_client: MoonrakerClient, tmp_path: Path
) -> None:
    """Klippy restarts under a running `listen`: it reports the gap, then pushes again."""
    await printer_client.upload(write_klippy_gcode(tmp_path / "after-restart.gcode", 2))
    recorder = Recorder()

    with listening(printer_client, recorder) as task:
        await wait_until(lambda: bool(recorder.statuses))
        await asyncio.to_thread(printer.stop_klippy)
        await wait_until(lambda: recorder.saw(PrinterState.DISCONNECTED))
        await asyncio.to_thread(printer.start_klippy)
        seen = len(recorder.statuses)
        await wait_until(
            lambda: any(s.state is not PrinterState.DISCONNECTED for s in recorder.statuses[seen:])
        )
        await printer_client.start("after-restart.gcode")
        # Only a fresh subscription delivers the new job's pushes.
        await wait_until(lambda: recorder.saw(PrinterState.PRINTING), timeout=5)
        assert not task.done()
