"""The Obico adapter against a fake ML API that fetches each snapshot from its URL."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
import io

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image
import pytest

from kittyai.printwatch import (
    DetectorAuthError,
    Frame,
    FrameContext,
    ObicoDetector,
    PrintWatch,
    WatchSettings,
)
from tests.helpers.net import free_port
from tests.lib.printwatch.fakes import FakeObicoML, SnapshotServer

CONTEXT = FrameContext(index=40, warmup_frames=30)
NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
BOX = [320.5, 240.0, 80.0, 64.0]


def jpeg(shade: int = 120) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (shade, shade, shade)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
async def camera() -> AsyncIterator[SnapshotServer]:
    async with SnapshotServer() as camera:
        camera.image = jpeg()
        yield camera


async def test_the_ml_api_fetches_the_snapshot_and_its_boxes_are_summed(
    session: aiohttp.ClientSession, camera: SnapshotServer
) -> None:
    seen: list[bytes] = []

    def detect(image: bytes) -> list:
        seen.append(image)
        return [["failure", 0.41, BOX], ["failure", 0.23, BOX]]

    async with FakeObicoML(detect=detect) as obico:
        detector = ObicoDetector(session, obico.url)
        result = await detector.score(
            Frame(image=jpeg(), taken_at=NOW, url=camera.snapshot_url), CONTEXT
        )

    assert seen == [camera.image]
    assert camera.fetches == 1
    assert obico.fetched == [camera.snapshot_url]
    assert result.score == pytest.approx(0.64)
    assert result.details == {"boxes": 2.0, "confidence_sum": pytest.approx(0.64)}
    assert "2 failure box(es)" in result.reason


async def test_the_score_is_clipped_to_one(
    session: aiohttp.ClientSession, camera: SnapshotServer
) -> None:
    async with FakeObicoML(detect=lambda image: [["failure", 0.7, BOX]] * 3) as obico:
        result = await ObicoDetector(session, obico.url + "/").score(
            Frame(image=jpeg(), taken_at=NOW, url=camera.snapshot_url), CONTEXT
        )

    assert result.score == 1.0


async def test_no_boxes_is_no_failure(
    session: aiohttp.ClientSession, camera: SnapshotServer
) -> None:
    async with FakeObicoML(detect=lambda image: []) as obico:
        result = await ObicoDetector(session, obico.url).score(
            Frame(image=jpeg(), taken_at=NOW, url=camera.snapshot_url), CONTEXT
        )

    assert (result.score, result.reason) == (0.0, "no failure found")


async def test_the_token_is_sent_and_a_wrong_one_raises(
    session: aiohttp.ClientSession, camera: SnapshotServer
) -> None:
    frame = Frame(image=jpeg(), taken_at=NOW, url=camera.snapshot_url)
    async with FakeObicoML(detect=lambda image: [], token="ml-secret") as obico:
        accepted = await ObicoDetector(session, obico.url, token="ml-secret").score(frame, CONTEXT)
        with pytest.raises(DetectorAuthError):
            await ObicoDetector(session, obico.url, token="wrong").score(frame, CONTEXT)
        with pytest.raises(DetectorAuthError):
            await ObicoDetector(session, obico.url).score(frame, CONTEXT)

    assert accepted.score == 0.0
    assert obico.requests[0]["Authorization"] == "Bearer ml-secret"
    assert "Authorization" not in obico.requests[2]


async def test_a_frame_without_a_url_scores_as_unknown(session: aiohttp.ClientSession) -> None:
    async with FakeObicoML(detect=lambda image: [["failure", 0.9, BOX]]) as obico:
        result = await ObicoDetector(session, obico.url).score(
            Frame(image=jpeg(), taken_at=NOW), CONTEXT
        )

    assert result.score is None
    assert obico.requests == []


async def test_a_snapshot_the_ml_api_cannot_fetch_scores_as_unknown(
    session: aiohttp.ClientSession, camera: SnapshotServer
) -> None:
    camera.image = None
    async with FakeObicoML(detect=lambda image: [["failure", 0.9, BOX]]) as obico:
        result = await ObicoDetector(session, obico.url).score(
            Frame(image=jpeg(), taken_at=NOW, url=camera.snapshot_url), CONTEXT
        )

    assert result.score is None
    assert "HTTP 400" in result.reason
    assert "Failed to get image" in result.reason


async def test_an_ml_api_that_is_down_scores_as_unknown(session: aiohttp.ClientSession) -> None:
    detector = ObicoDetector(session, f"http://127.0.0.1:{free_port()}", timeout=5)

    result = await detector.score(
        Frame(image=jpeg(), taken_at=NOW, url="http://127.0.0.1:1/snapshot.jpg"), CONTEXT
    )

    assert result.score is None
    assert "no answer" in result.reason


@pytest.mark.parametrize(
    "body",
    [
        {"detections": [], "error": "cannot identify image"},
        {"detections": [["failure", "high", BOX]]},
        {"detections": [["failure", 0.5]]},
        {"predictions": []},
        ["failure", 0.5],
    ],
)
async def test_answers_that_are_not_obicos_score_as_unknown(
    session: aiohttp.ClientSession, body: object
) -> None:
    async def predict(request: web.Request) -> web.Response:
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/p/", predict)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        result = await ObicoDetector(session, str(server.make_url(""))).score(
            Frame(image=jpeg(), taken_at=NOW, url="http://127.0.0.1:1/snapshot.jpg"), CONTEXT
        )
    finally:
        await server.close()

    assert result.score is None


async def test_a_watch_on_obico_pauses_when_boxes_persist(
    session: aiohttp.ClientSession, camera: SnapshotServer
) -> None:
    async with FakeObicoML(
        detect=lambda image: [["failure", 0.5, BOX], ["failure", 0.45, BOX]]
    ) as obico:
        watch = PrintWatch(ObicoDetector(session, obico.url), WatchSettings(warmup_frames=2))
        results = [await watch.process(jpeg(), url=camera.snapshot_url) for _ in range(10)]

    assert [r.index for r in results if r.should_pause] == [7]
    assert camera.fetches == 10
