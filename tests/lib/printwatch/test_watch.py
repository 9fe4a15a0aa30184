"""The watch: levels per frame, one pause per job, evidence on disk, reset and resume."""

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
import io
import json
from pathlib import Path

from PIL import Image
import pytest

from kittyai.printwatch import (
    Detector,
    DetectorAuthError,
    Frame,
    FrameContext,
    FrameScore,
    Level,
    PrintWatch,
    WatchSettings,
)

START = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)


class ScriptedDetector(Detector):
    """Scores frames from a script; records what the watch told it."""

    name = "scripted"

    def __init__(self, scores: Iterator[float | None]) -> None:
        self.scores = scores
        self.contexts: list[FrameContext] = []
        self.resets = 0

    async def score(self, frame: Frame, context: FrameContext) -> FrameScore:
        self.contexts.append(context)
        score = next(self.scores)
        return FrameScore(score, "scripted", {} if score is None else {"raw": score})

    def reset(self) -> None:
        self.resets += 1


def snapshot(index: int, *, kind: str = "JPEG") -> bytes:
    """Return a small, distinct picture."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (index % 256, 40, 90)).save(buffer, kind)
    return buffer.getvalue()


async def run(watch: PrintWatch, frames: int, first: int = 0) -> list:
    return [
        await watch.process(snapshot(index), taken_at=START + timedelta(seconds=10 * index))
        for index in range(first, first + frames)
    ]


def settings(warmup: int = 3) -> WatchSettings:
    return WatchSettings(warmup_frames=warmup)


async def test_pause_is_recommended_once_on_the_frame_that_reaches_it() -> None:
    detector = ScriptedDetector(iter([0.0] * 5 + [1.0] * 30))
    watch = PrintWatch(detector, settings(), job="benchy.gcode")

    results = await run(watch, 35)

    pauses = [result.index for result in results if result.should_pause]
    first_pause = next(r.index for r in results if r.level is Level.PAUSE)
    assert pauses == [first_pause]
    # Seven frames of a clear failure after five good ones.
    assert first_pause == 11
    assert watch.trigger == results[first_pause]
    assert all(result.level is Level.PAUSE for result in results[first_pause:])
    assert [r.warming_up for r in results[:4]] == [True, True, True, False]
    assert [context.index for context in detector.contexts] == list(range(35))
    assert {context.warmup_frames for context in detector.contexts} == {3}


async def test_results_carry_the_detector_verdict_and_time() -> None:
    watch = PrintWatch(ScriptedDetector(iter([0.5, None])), settings(0))

    first, second = await run(watch, 2)

    assert (first.score, first.reason, first.details) == (0.5, "scripted", {"raw": 0.5})
    assert first.smoothed == pytest.approx(0.5 * 2 / 13)
    assert first.taken_at == START
    assert second.score is None
    assert second.smoothed == first.smoothed
    assert watch.results == (first, second)


async def test_a_good_print_never_pauses() -> None:
    watch = PrintWatch(ScriptedDetector(iter([0.1, 0.3, 0.0, 0.2] * 50)), settings())

    results = await run(watch, 200)

    assert not any(result.should_pause for result in results)
    assert {result.level for result in results} == {Level.OK}
    assert watch.trigger is None


async def test_evidence_holds_the_triggering_snapshot_and_the_history(tmp_path: Path) -> None:
    watch = PrintWatch(
        ScriptedDetector(iter([0.0] * 5 + [1.0] * 10)), settings(), job="calibration cube.gcode"
    )
    results = await run(watch, 15)
    trigger = watch.trigger
    assert trigger is not None

    evidence = watch.write_evidence(tmp_path / "kitty" / "evidence")

    assert evidence.image.read_bytes() == snapshot(trigger.index)
    assert evidence.image.suffix == ".jpg"
    assert evidence.image.parent == evidence.record.parent == tmp_path / "kitty" / "evidence"
    assert evidence.image.name == "calibration_cube.gcode-20261122T140150.jpg"
    record = json.loads(evidence.record.read_text())
    assert record["job"] == "calibration cube.gcode"
    assert record["detector"] == "scripted"
    assert record["trigger"] == trigger.index == 11
    assert record["image"] == evidence.image.name
    assert record["settings"]["warmup_frames"] == 3
    assert record["settings"]["pause_level"] == pytest.approx(0.665)
    assert [frame["score"] for frame in record["frames"]] == [r.score for r in results]
    assert [frame["level"] for frame in record["frames"]] == [r.level.value for r in results]
    assert record["frames"][11]["smoothed"] == pytest.approx(results[11].smoothed)
    assert record["frames"][0]["taken_at"] == START.isoformat()


async def test_evidence_without_a_pause_keeps_the_latest_snapshot(tmp_path: Path) -> None:
    watch = PrintWatch(ScriptedDetector(iter([0.0] * 4)), settings())
    await run(watch, 4)

    evidence = watch.write_evidence(tmp_path)

    assert evidence.image.read_bytes() == snapshot(3)
    assert json.loads(evidence.record.read_text())["trigger"] is None


async def test_png_snapshots_are_kept_as_png(tmp_path: Path) -> None:
    watch = PrintWatch(ScriptedDetector(iter([0.0])), settings())
    await watch.process(snapshot(1, kind="PNG"))

    assert watch.write_evidence(tmp_path).image.suffix == ".png"


def test_evidence_needs_a_frame(tmp_path: Path) -> None:
    watch = PrintWatch(ScriptedDetector(iter([])), settings())

    with pytest.raises(ValueError, match="no frame"):
        watch.write_evidence(tmp_path)


async def test_reset_starts_a_new_job() -> None:
    detector = ScriptedDetector(iter([1.0] * 40))
    watch = PrintWatch(detector, settings(), job="first.gcode")
    await run(watch, 20)
    assert watch.trigger is not None

    watch.reset("second.gcode")
    results = await run(watch, 3)

    assert watch.job == "second.gcode"
    assert detector.resets == 1
    assert watch.trigger is None
    assert [r.index for r in watch.results] == [0, 1, 2]
    assert all(r.warming_up and r.level is Level.OK for r in results)
    assert detector.contexts[-1].index == 2


async def test_resume_learns_again_and_pauses_again() -> None:
    detector = ScriptedDetector(iter([1.0] * 60))
    watch = PrintWatch(detector, settings())
    first = await run(watch, 12)
    first_pause = next(r.index for r in first if r.should_pause)

    watch.resume()
    second = await run(watch, 12, first=12)

    assert detector.resets == 1
    # The history goes on; the detector and the smoother start over.
    assert [r.index for r in watch.results] == list(range(24))
    assert detector.contexts[12].index == 0
    assert all(r.level is Level.OK for r in second[:3])
    second_pause = next(r.index for r in second if r.should_pause)
    assert second_pause - 12 == first_pause
    assert watch.trigger is not None
    assert watch.trigger.index == second_pause


async def test_frames_are_judged_one_at_a_time_in_order() -> None:
    class SlowDetector(ScriptedDetector):
        active = 0
        most = 0

        async def score(self, frame: Frame, context: FrameContext) -> FrameScore:
            SlowDetector.active += 1
            SlowDetector.most = max(SlowDetector.most, SlowDetector.active)
            await asyncio.sleep(0.01)
            SlowDetector.active -= 1
            return await super().score(frame, context)

    detector = SlowDetector(iter([0.0] * 5))
    watch = PrintWatch(detector, settings())

    results = await asyncio.gather(*(watch.process(snapshot(i)) for i in range(5)))

    assert SlowDetector.most == 1
    assert [r.index for r in results] == [0, 1, 2, 3, 4]


async def test_a_detector_that_cannot_work_raises_to_the_caller() -> None:
    class Rejected(ScriptedDetector):
        async def score(self, frame: Frame, context: FrameContext) -> FrameScore:
            raise DetectorAuthError("the router rejected the token")

    watch = PrintWatch(Rejected(iter([])), settings())

    with pytest.raises(DetectorAuthError):
        await watch.process(snapshot(0))
    assert watch.results == ()
