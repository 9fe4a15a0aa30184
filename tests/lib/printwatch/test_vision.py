"""The vision detector against a fake of KITTY's router that speaks Chat Completions."""

from datetime import UTC, datetime
import io
import json

import aiohttp
from PIL import Image
import pytest

from kittyai.printwatch import (
    DetectorAuthError,
    Frame,
    FrameContext,
    Level,
    PrintWatch,
    VisionDetector,
    WatchSettings,
)
from kittyai.printwatch.vision import QUESTION, VERDICT_SCHEMA
from kittyai.router.classify import cache_policy, freshness_cue
from tests.helpers.frames import Scenario, generate
from tests.helpers.net import free_port
from tests.lib.printwatch.fakes import FakeVisionRouter, Status

TOKEN = "kitty-router-token-5e1f"
CONTEXT = FrameContext(index=40, warmup_frames=30)
NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)


def jpeg(colour: tuple[int, int, int] = (180, 150, 90), kind: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, kind)
    return buffer.getvalue()


def verdict(failure: object, confidence: object, reason: object = "looks fine") -> str:
    return json.dumps({"failure": failure, "confidence": confidence, "reason": reason})


async def score_with(session: aiohttp.ClientSession, answer: str | Status, **kwargs: object):
    async with FakeVisionRouter(token=TOKEN, answer=lambda image: answer) as router:
        detector = VisionDetector(session, router.url, TOKEN, **kwargs)  # type: ignore[arg-type]
        result = await detector.score(Frame(image=jpeg(), taken_at=NOW), CONTEXT)
        return result, router.requests


async def test_the_snapshot_goes_to_the_router_as_an_image_part(
    session: aiohttp.ClientSession,
) -> None:
    picture = jpeg((10, 200, 30))
    async with FakeVisionRouter(
        token=TOKEN, answer=lambda image: verdict(True, 0.8, "spaghetti beside the part")
    ) as router:
        detector = VisionDetector(session, router.url, TOKEN, model="kitty-local")
        result = await detector.score(Frame(image=picture, taken_at=NOW), CONTEXT)

    (request,) = router.requests
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.image == picture
    assert request.media_type == "image/jpeg"
    body = request.body
    assert body["model"] == "kitty-local"
    assert body["stream"] is False
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == VERDICT_SCHEMA
    assert set(VERDICT_SCHEMA["required"]) == {"failure", "confidence", "reason"}
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][-1]["content"][0] == {"type": "text", "text": QUESTION}
    assert (result.score, result.reason) == (0.8, "spaghetti beside the part")
    assert result.details == {"failure": 1.0, "confidence": 0.8}


async def test_png_snapshots_are_sent_as_png(session: aiohttp.ClientSession) -> None:
    async with FakeVisionRouter(token=TOKEN, answer=lambda image: verdict(False, 0.9)) as router:
        detector = VisionDetector(session, router.url, TOKEN)
        await detector.score(Frame(image=jpeg(kind="PNG"), taken_at=NOW), CONTEXT)

    assert router.requests[0].media_type == "image/png"


async def test_the_default_profile_keeps_snapshots_in_the_house(
    session: aiohttp.ClientSession,
) -> None:
    _, requests = await score_with(session, verdict(False, 0.9))

    assert requests[0].body["model"] == "kitty-local"


async def test_the_router_never_answers_a_snapshot_from_its_cache(
    session: aiohttp.ClientSession,
) -> None:
    # Every snapshot asks the same words: the picture is what differs.
    _, requests = await score_with(session, verdict(False, 0.9))

    policy = cache_policy(requests[0].body["messages"])

    assert (policy.exact, policy.semantic, policy.reason) == (False, False, "image")
    # Nor does the router take the question for fresh facts, which go to a search model.
    assert freshness_cue(QUESTION) is None


async def test_no_failure_scores_zero_however_unsure(session: aiohttp.ClientSession) -> None:
    sure, _ = await score_with(session, verdict(False, 0.95, "clean first layer"))
    unsure, _ = await score_with(session, verdict(False, 0.3))

    assert (sure.score, sure.reason) == (0.0, "clean first layer")
    assert unsure.score == 0.0


@pytest.mark.parametrize(
    "content",
    [
        '```json\n{"failure": true, "confidence": 0.7, "reason": "a blob"}\n```',
        'My verdict: {"failure": true, "confidence": 0.7, "reason": "a blob"} Hope it helps.',
    ],
)
async def test_a_verdict_wrapped_in_text_is_still_read(
    session: aiohttp.ClientSession, content: str
) -> None:
    result, _ = await score_with(session, content)

    assert (result.score, result.reason) == (0.7, "a blob")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("The print looks like it is failing, with spaghetti.", "not JSON"),
        ("", "no verdict"),
        ('{"failure": "yes", "confidence": 0.9, "reason": "x"}', "neither failure nor not"),
        ('{"failure": true, "reason": "x"}', "no confidence"),
        ('{"failure": true, "confidence": true, "reason": "x"}', "no confidence"),
        ('{"failure": true, "confidence": 85, "reason": "x"}', "outside 0 to 1"),
        ("[true, 0.9]", "not JSON"),
        ('{"failure": true, "confidence": 0.9', "not JSON"),
    ],
)
async def test_junk_answers_score_as_unknown(
    session: aiohttp.ClientSession, content: str, reason: str
) -> None:
    result, requests = await score_with(session, content)

    assert len(requests) == 1
    assert result.score is None
    assert reason in result.reason


async def test_junk_never_pauses_a_print(session: aiohttp.ClientSession) -> None:
    async with FakeVisionRouter(token=TOKEN, answer=lambda image: "FAILURE!!! spaghetti") as router:
        watch = PrintWatch(
            VisionDetector(session, router.url, TOKEN), WatchSettings(warmup_frames=0)
        )
        results = [await watch.process(jpeg()) for _ in range(12)]

    assert len(router.requests) == 12
    assert all(r.score is None and r.smoothed == 0 and r.level is Level.OK for r in results)


async def test_router_errors_score_as_unknown(session: aiohttp.ClientSession) -> None:
    busy, _ = await score_with(session, Status(503, "no backend available"))
    bad, _ = await score_with(session, Status(400, "the model cannot read images"))

    assert busy.score is None
    assert "HTTP 503" in busy.reason
    assert bad.score is None
    assert "HTTP 400" in bad.reason


async def test_a_router_that_is_down_scores_as_unknown(session: aiohttp.ClientSession) -> None:
    detector = VisionDetector(session, f"http://127.0.0.1:{free_port()}", TOKEN, timeout=5)

    result = await detector.score(Frame(image=jpeg(), taken_at=NOW), CONTEXT)

    assert result.score is None
    assert "no answer from the router" in result.reason


async def test_a_rejected_token_raises(session: aiohttp.ClientSession) -> None:
    async with FakeVisionRouter(token=TOKEN, answer=lambda image: verdict(True, 1.0)) as router:
        detector = VisionDetector(session, router.url, "wrong-token")

        with pytest.raises(DetectorAuthError, match="rejected the token"):
            await detector.score(Frame(image=jpeg(), taken_at=NOW), CONTEXT)


async def test_a_snapshot_that_is_no_picture_is_not_sent(session: aiohttp.ClientSession) -> None:
    async with FakeVisionRouter(token=TOKEN, answer=lambda image: verdict(True, 1.0)) as router:
        detector = VisionDetector(session, router.url, TOKEN)
        result = await detector.score(Frame(image=b"GIF89a....", taken_at=NOW), CONTEXT)

    assert result.score is None
    assert router.requests == []


async def test_a_watch_on_the_vision_model_pauses_spaghetti(session: aiohttp.ClientSession) -> None:
    print_ = generate(Scenario.SPAGHETTI, 4, frames=60)
    # The fake model recognises each snapshot it receives and judges it truly.
    truth = {frame.image: frame.failing for frame in print_.frames}

    def judge(image: bytes) -> str:
        failing = truth[image]
        return verdict(failing, 0.9, "spaghetti" if failing else "a clean print")

    async with FakeVisionRouter(token=TOKEN, answer=judge) as router:
        watch = PrintWatch(VisionDetector(session, router.url, TOKEN), WatchSettings())
        results = [await watch.process(frame.image) for frame in print_.frames]

    assert print_.onset is not None
    assert len(router.requests) == len(print_.frames)
    paused = [r.index for r in results if r.should_pause]
    # 0.9 a frame: the smoothed score reaches 0.665 on the ninth failing frame.
    assert paused == [print_.onset + 8]
    assert results[paused[0]].reason == "spaghetti"
