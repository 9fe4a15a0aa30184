"""The offline heuristic on synthetic prints: what a user would notice of it.

It must never pause a good print (lighting changes and camera bumps included)
and must pause every spaghetti print soon after the spaghetti starts.
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import cache
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from kittyai.printwatch import (
    Box,
    Frame,
    FrameContext,
    HeuristicDetector,
    HeuristicSettings,
    Level,
    PrintWatch,
    WatchResult,
)
from tests.helpers.frames import WARMUP_FRAMES, Scenario, SyntheticPrint, generate

FRAMES = 72
SEEDS = (0, 1, 2)
# Ten frames a minute: spaghetti must be paused within four minutes of its start.
MAX_FRAMES_TO_PAUSE = 25
START = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)


@cache
def synthetic(scenario: Scenario, seed: int, size: tuple[int, int] = (640, 480)) -> SyntheticPrint:
    return generate(scenario, seed, frames=FRAMES, size=size)


async def watch_print(
    print_: SyntheticPrint, detector: HeuristicDetector | None = None
) -> tuple[PrintWatch, list[WatchResult]]:
    watch = PrintWatch(detector or HeuristicDetector(), job=f"{print_.scenario}-{print_.seed}")
    results = [
        await watch.process(frame.image, taken_at=START + timedelta(seconds=10 * frame.index))
        for frame in print_.frames
    ]
    return watch, results


def first_pause(results: list[WatchResult]) -> int | None:
    return next((result.index for result in results if result.should_pause), None)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", [Scenario.GOOD, Scenario.LIGHTING, Scenario.BUMP])
async def test_good_prints_are_never_paused(scenario: Scenario, seed: int) -> None:
    print_ = synthetic(scenario, seed)

    _, results = await watch_print(print_)

    assert first_pause(results) is None
    assert all(result.level is not Level.PAUSE for result in results)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", [Scenario.SPAGHETTI, Scenario.DARK_SPAGHETTI])
async def test_spaghetti_is_paused_soon_after_it_starts(scenario: Scenario, seed: int) -> None:
    print_ = synthetic(scenario, seed)
    assert print_.onset is not None

    _, results = await watch_print(print_)

    paused = first_pause(results)
    assert paused is not None, f"never paused; onset at {print_.onset}"
    assert print_.onset <= paused <= print_.onset + MAX_FRAMES_TO_PAUSE
    assert "strands" in results[paused].reason


async def test_the_scene_is_learned_during_the_warm_up() -> None:
    print_ = synthetic(Scenario.GOOD, 0)

    _, results = await watch_print(print_)

    assert all(result.score is None for result in results[:WARMUP_FRAMES])
    assert "learning the scene (1 of 30 frames)" in results[0].reason
    assert results[WARMUP_FRAMES - 1].reason == "took the reference frame"
    assert all(result.score is not None for result in results[WARMUP_FRAMES:])
    assert results[-1].details.keys() == {"changed", "thin", "edge_growth", "shift"}


async def test_the_camera_bump_is_re_registered() -> None:
    print_ = synthetic(Scenario.BUMP, 0)
    assert print_.event is not None

    _, results = await watch_print(print_)

    before, after = results[print_.event - 1], results[print_.event + 1]
    assert before.details["shift"] == 0
    # The synthetic bump moves the picture by 3 to 10 pixels of 640.
    assert 0.004 <= after.details["shift"] <= 0.017
    assert "re-registered" in after.reason


def moved(image: bytes, dx: int, dy: int) -> bytes:
    """Return the snapshot as a camera moved by (dx, dy) pixels would take it."""
    picture = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
    pad = max(abs(dx), abs(dy))
    padded = np.pad(picture, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    height, width = picture.shape[:2]
    shifted = padded[pad - dy : pad - dy + height, pad - dx : pad - dx + width]
    buffer = io.BytesIO()
    Image.fromarray(shifted).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


async def test_a_camera_knocked_twice_is_found_both_times() -> None:
    print_ = synthetic(Scenario.GOOD, 2)
    watch = PrintWatch(HeuristicDetector())
    results = []
    for frame in print_.frames:
        image = frame.image
        if frame.index >= 55:
            image = moved(image, -14, 5)
        elif frame.index >= 40:
            image = moved(image, 4, -2)
        results.append(await watch.process(image))

    assert first_pause(results) is None
    assert results[45].details["shift"] == pytest.approx(4.5 / 640, abs=0.002)
    assert results[60].details["shift"] == pytest.approx(14.9 / 640, abs=0.002)


async def test_the_evidence_of_a_spaghetti_pause(tmp_path: Path) -> None:
    print_ = synthetic(Scenario.SPAGHETTI, 0)
    watch, results = await watch_print(print_)
    paused = first_pause(results)
    assert paused is not None

    evidence = watch.write_evidence(tmp_path)

    assert evidence.image.read_bytes() == print_.frames[paused].image
    record = json.loads(evidence.record.read_text())
    assert record["detector"] == "heuristic"
    assert record["trigger"] == paused
    assert len(record["frames"]) == FRAMES
    assert record["frames"][paused]["level"] == "pause"
    assert record["frames"][paused]["details"]["thin"] > 0


async def test_a_configured_footprint_replaces_the_learned_one() -> None:
    left, _, right, bottom = synthetic(Scenario.GOOD, 1).part_box
    # Where the part stands, widened by the toolhead working over it, up to the top.
    footprint = Box(left=left - 0.08, top=0, right=right + 0.08, bottom=min(bottom + 0.02, 1))
    detector = HeuristicDetector(HeuristicSettings(footprint=footprint))

    _, good = await watch_print(synthetic(Scenario.GOOD, 1), detector)
    detector.reset()
    spaghetti = synthetic(Scenario.SPAGHETTI, 1)
    _, failing = await watch_print(spaghetti, detector)

    assert first_pause(good) is None
    paused = first_pause(failing)
    assert paused is not None
    assert spaghetti.onset is not None
    assert spaghetti.onset <= paused <= spaghetti.onset + MAX_FRAMES_TO_PAUSE


async def test_only_the_print_region_is_watched() -> None:
    # The wall above the printer: the spaghetti on the bed is out of sight.
    wall = HeuristicDetector(HeuristicSettings(region=Box(left=0, top=0, right=1, bottom=0.45)))
    bed = HeuristicDetector(HeuristicSettings(region=Box(left=0, top=0.5, right=1, bottom=1)))
    print_ = synthetic(Scenario.SPAGHETTI, 2)

    _, above = await watch_print(print_, wall)
    _, below = await watch_print(print_, bed)

    assert first_pause(above) is None
    assert first_pause(below) is not None


async def test_a_larger_camera_gives_the_same_verdicts() -> None:
    good = synthetic(Scenario.GOOD, 2, (1280, 960))
    spaghetti = synthetic(Scenario.SPAGHETTI, 2, (1280, 960))

    _, good_results = await watch_print(good)
    _, spaghetti_results = await watch_print(spaghetti)

    assert first_pause(good_results) is None
    paused = first_pause(spaghetti_results)
    assert spaghetti.onset is not None
    assert paused is not None
    assert spaghetti.onset <= paused <= spaghetti.onset + MAX_FRAMES_TO_PAUSE


async def test_png_snapshots_are_judged_like_jpeg() -> None:
    print_ = synthetic(Scenario.SPAGHETTI, 0)
    detector = HeuristicDetector()
    scores = []
    for frame in print_.frames:
        png = io.BytesIO()
        Image.open(io.BytesIO(frame.image)).save(png, "PNG", compress_level=1)
        context = FrameContext(index=frame.index, warmup_frames=WARMUP_FRAMES)
        scores.append(await detector.score(Frame(image=png.getvalue(), taken_at=START), context))

    assert scores[-1].score is not None
    assert scores[-1].score > 0.5


async def test_a_snapshot_that_is_no_picture_scores_as_unknown() -> None:
    detector = HeuristicDetector()

    verdict = await detector.score(
        Frame(image=b"<html>camera offline</html>", taken_at=START),
        FrameContext(index=0, warmup_frames=WARMUP_FRAMES),
    )

    assert verdict.score is None
    assert verdict.reason == "the snapshot is not a picture"


async def test_reset_learns_a_new_scene_and_an_executor_can_be_given() -> None:
    print_ = synthetic(Scenario.GOOD, 0)
    with ThreadPoolExecutor(1) as executor:
        detector = HeuristicDetector(executor=executor)
        context = FrameContext(index=WARMUP_FRAMES + 5, warmup_frames=WARMUP_FRAMES)
        for frame in print_.frames[: WARMUP_FRAMES + 5]:
            await detector.score(
                Frame(image=frame.image, taken_at=START),
                FrameContext(index=frame.index, warmup_frames=WARMUP_FRAMES),
            )
        judged = await detector.score(Frame(image=print_.frames[40].image, taken_at=START), context)

        detector.reset()
        relearning = await detector.score(
            Frame(image=print_.frames[41].image, taken_at=START), context
        )

    assert judged.score is not None
    assert relearning.score is None


def test_a_footprint_outside_the_region_is_refused() -> None:
    with pytest.raises(ValueError, match="outside the region"):
        HeuristicSettings(
            region=Box(left=0, top=0, right=0.5, bottom=1),
            footprint=Box(left=0.6, top=0, right=0.9, bottom=1),
        )
