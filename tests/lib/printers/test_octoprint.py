"""OctoPrintClient against a real OctoPrint 1.11.8 with its Virtual Printer.

One server serves the whole module (it takes seconds to start); each test brings the
printer into the state it needs first. Jobs are G-code files of dwells, which the
Virtual Printer really waits out.
"""

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
import re
import time

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
)
from kittyai.printers.octoprint import (
    OctoPrintClient,
    app_keys_available,
    poll_app_key,
    request_app_key,
)
from tests.helpers.gcode import BED_TARGET_C, NOZZLE_TARGET_C, write_timed_gcode
from tests.helpers.net import loopback_sockets
from tests.helpers.octoprint import SNAPSHOT_URL, STREAM_PATH, VIRTUAL_PORT, OctoPrintServer


@pytest.fixture(scope="module")
def octoprint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OctoPrintServer]:
    """Run one real OctoPrint for the module; it is stopped even when tests fail."""
    with loopback_sockets():
        server = OctoPrintServer(tmp_path_factory.mktemp("octoprint"))
        server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(session: aiohttp.ClientSession, octoprint: OctoPrintServer) -> OctoPrintClient:
    return OctoPrintClient(session, octoprint.url, octoprint.api_key)


@pytest.fixture
async def printer(client: OctoPrintClient, octoprint: OctoPrintServer) -> OctoPrintClient:
    """The client, with the Virtual Printer connected and no job running."""
    status = await client.status()
    if status.state in (PrinterState.DISCONNECTED, PrinterState.ERROR):
        await asyncio.to_thread(octoprint.connect_virtual_printer)
    elif status.busy:
        await client.cancel()
    return client


async def upload_job(client: OctoPrintClient, tmp_path: Path, seconds: float, name: str) -> str:
    """Upload a job lasting `seconds`; return its name on the server."""
    stored = await client.upload(write_timed_gcode(tmp_path / "job.gcode", seconds), name)
    return stored.name


async def wait_for(
    client: OctoPrintClient, condition: Callable[[PrinterStatus], bool]
) -> PrinterStatus:
    """Poll the status until `condition(status)` holds; fail after 10 seconds."""
    deadline = time.monotonic() + 10
    while not condition(status := await client.status()):
        assert time.monotonic() < deadline, f"condition not met in time, last {status}"
        await asyncio.sleep(0.1)
    return status


async def test_info(
    client: OctoPrintClient, session: aiohttp.ClientSession, octoprint: OctoPrintServer
) -> None:
    """Version, camera URLs made absolute, and the id HA core's OctoPrint devices use."""
    info = await client.info()

    async with session.get(f"{octoprint.url}/plugin/discovery/discovery.xml") as response:
        discovery = await response.text()
    udn = re.search(r"<UDN>uuid:([^<]+)</UDN>", discovery)
    assert udn is not None
    assert info.kind is PrinterKind.OCTOPRINT
    assert info.unique_id == udn.group(1)
    assert info.version == "1.11.8"
    assert info.name == "OctoPrint (127.0.0.1)"
    assert info.stream_url == f"{octoprint.url}{STREAM_PATH}"
    assert info.snapshot_url == SNAPSHOT_URL


async def test_status_disconnected_then_connected(
    client: OctoPrintClient, octoprint: OctoPrintServer
) -> None:
    """Without a printer OctoPrint is reachable but offline; connecting makes it idle."""
    await asyncio.to_thread(octoprint.disconnect_printer)

    offline = await client.status()
    ready = await client.connect_printer(VIRTUAL_PORT)
    again = await client.status()

    assert offline.state is PrinterState.DISCONNECTED
    assert offline.message == "Offline"
    assert offline.nozzle.actual is None
    assert not offline.busy
    assert ready.state is PrinterState.IDLE
    assert again.state is PrinterState.IDLE
    assert again.message == "Operational"


async def test_upload_and_list(printer: OctoPrintClient, tmp_path: Path) -> None:
    """An uploaded file is listed with its size and time, under the name OctoPrint gave it."""
    path = write_timed_gcode(tmp_path / "local.gcode", 2)

    # OctoPrint keeps spaces and folders but drops characters unsafe in file names.
    stored = await printer.upload(path, "parts/Benchy hull?.gcode")
    files = await printer.list_files()

    assert stored.name == "parts/Benchy hull.gcode"
    assert stored.size == path.stat().st_size
    assert stored.modified is not None
    assert abs(time.time() - stored.modified.timestamp()) < 60
    assert stored in files


async def test_print_pause_resume_cancel(printer: OctoPrintClient, tmp_path: Path) -> None:
    """A job prints with rising progress and heaters on, pauses still, resumes, cancels."""
    name = await upload_job(printer, tmp_path, 20, "pause-me.gcode")

    started = await printer.start(name)
    running = await wait_for(
        printer,
        lambda s: (s.progress or 0) > (started.progress or 0) and s.nozzle.actual is not None,
    )
    paused = await printer.pause()
    await asyncio.sleep(1)
    still_paused = await printer.status()
    resumed = await printer.resume()
    printing_again = await wait_for(printer, lambda s: (s.progress or 0) > still_paused.progress)
    cancelled = await printer.cancel()

    assert started.state is PrinterState.PRINTING
    assert started.file == name
    assert running.state is PrinterState.PRINTING
    assert running.nozzle.target == NOZZLE_TARGET_C
    assert running.bed.target == BED_TARGET_C
    assert running.bed.actual is not None
    assert running.print_time_s is not None
    assert paused.state is PrinterState.PAUSED
    assert still_paused.state is PrinterState.PAUSED
    assert still_paused.progress == paused.progress
    assert resumed.state is PrinterState.PRINTING
    assert printing_again.state is PrinterState.PRINTING
    assert cancelled.state is PrinterState.IDLE
    assert not cancelled.busy


async def test_job_runs_to_completion(printer: OctoPrintClient, tmp_path: Path) -> None:
    """A finished job shows as complete at 100 %, and the printer takes the next one."""
    name = await upload_job(printer, tmp_path, 1, "parts/short run.gcode")

    await printer.start(name)
    done = await wait_for(printer, lambda s: not s.busy)

    assert done.state is PrinterState.COMPLETE
    assert done.progress == 100
    assert done.file == name
    assert (await printer.start(name)).state is PrinterState.PRINTING
    await printer.cancel()


async def test_start_while_printing_is_refused(printer: OctoPrintClient, tmp_path: Path) -> None:
    """Starting a second job fails and leaves the running one printing."""
    first = await upload_job(printer, tmp_path, 20, "first.gcode")
    second = await upload_job(printer, tmp_path, 2, "second.gcode")
    await printer.start(first)

    with pytest.raises(PrinterBusyError, match="busy"):
        await printer.start(second)
    before = await printer.status()
    after = await wait_for(printer, lambda s: (s.progress or 0) > (before.progress or 0))

    assert after.state is PrinterState.PRINTING
    assert after.file == first
    await printer.cancel()


async def test_start_missing_file(printer: OctoPrintClient) -> None:
    """A file the server does not hold is named in the error, and nothing starts."""
    with pytest.raises(PrinterFileNotFoundError, match=r"no-such-part\.gcode"):
        await printer.start("no-such-part.gcode")

    assert (await printer.status()).state in (PrinterState.IDLE, PrinterState.COMPLETE)


async def test_pause_without_job_says_why(printer: OctoPrintClient) -> None:
    """OctoPrint's own refusal reaches the user."""
    with pytest.raises(PrinterBusyError, match="neither printing nor paused"):
        await printer.pause()


async def test_firmware_error_and_reconnect(
    printer: OctoPrintClient, octoprint: OctoPrintServer
) -> None:
    """A firmware fault shows as an error with the firmware's words; reconnecting clears it."""
    await asyncio.to_thread(octoprint.trigger_firmware_error)

    failed = await wait_for(printer, lambda s: s.state is PrinterState.ERROR)
    recovered = await printer.connect_printer(VIRTUAL_PORT)

    assert failed.message is not None
    assert "Thermal Runaway" in failed.message
    assert recovered.state is PrinterState.IDLE


async def test_wrong_key(session: aiohttp.ClientSession, octoprint: OctoPrintServer) -> None:
    """A rejected key is an auth error, and no message names the key."""
    key = "WRONG-0123456789abcdef"
    client = OctoPrintClient(session, octoprint.url, key)

    with pytest.raises(PrinterAuthError) as info_error:
        await client.info()
    with pytest.raises(PrinterAuthError) as status_error:
        await client.status()

    for error in (info_error.value, status_error.value):
        assert key not in str(error)
        assert key not in repr(error)
        assert key not in repr(error.__cause__)


async def test_server_goes_away_and_comes_back(
    client: OctoPrintClient, octoprint: OctoPrintServer
) -> None:
    """A stopped server is a connection error; started again, it is the same printer."""
    before = await client.info()
    await asyncio.to_thread(octoprint.stop)
    try:
        with pytest.raises(PrinterConnectionError):
            await client.status()
    finally:
        await asyncio.to_thread(octoprint.start)

    after = await client.info()
    status = await client.status()

    assert after.unique_id == before.unique_id
    # OctoPrint does not reconnect the printer by itself after a restart.
    assert status.state is PrinterState.DISCONNECTED


async def test_app_key_approved(session: aiohttp.ClientSession, octoprint: OctoPrintServer) -> None:
    """Pairing: pending until the admin allows it, then a key that works."""
    assert await app_keys_available(session, octoprint.url)

    token = await request_app_key(session, octoprint.url, "KITTY", octoprint.username)
    pending = await poll_app_key(session, octoprint.url, token)
    await asyncio.to_thread(octoprint.decide_app_key, "KITTY", allow=True)
    key = await poll_app_key(session, octoprint.url, token)

    assert pending is None
    assert key
    assert key != octoprint.api_key
    info = await OctoPrintClient(session, octoprint.url, key).info()
    assert info.version == "1.11.8"


async def test_app_key_denied(session: aiohttp.ClientSession, octoprint: OctoPrintServer) -> None:
    """A denied request ends the pairing with an auth error."""
    token = await request_app_key(session, octoprint.url, "KITTY Denied", None)
    await asyncio.to_thread(octoprint.decide_app_key, "KITTY Denied", allow=False)

    with pytest.raises(PrinterAuthError, match="denied"):
        await poll_app_key(session, octoprint.url, token)


async def test_targets_are_set_and_read_back(printer: OctoPrintClient) -> None:
    """Preheating sets both targets; a heater left out keeps its target."""
    status = await printer.set_targets(nozzle=60, bed=40)
    assert (status.nozzle.target, status.bed.target) == (60, 40)

    status = await printer.set_targets(bed=0)
    assert (status.nozzle.target, status.bed.target) == (60, 0)
    await printer.set_targets(nozzle=0)
