"""Threshold calibration: the local tier keeps the target share of scored turns."""

from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from pathlib import Path
import random

import pytest

from kittyai.router.calibration import MIN_SCORES, ThresholdCalibrator, threshold_for_share
from kittyai.router.ledger import DecisionLedger
from kittyai.router.options import RoutingOptions
from tests.lib.router.decisions import NOW, make_decision


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[DecisionLedger]:
    ledger = await DecisionLedger.open(tmp_path / "decisions.sqlite3")
    yield ledger
    await ledger.close()


async def record_scores(
    ledger: DecisionLedger, scores: Iterable[float], *, start: datetime = NOW
) -> None:
    """Record one scored local turn per score, a second apart, the first at `start`."""
    for n, score in enumerate(scores):
        await ledger.record(make_decision(at=start + timedelta(seconds=n), confidence=score))


def test_the_threshold_is_the_quantile_that_keeps_the_share() -> None:
    scores = [n / 100 for n in range(1, 101)]
    random.Random(3).shuffle(scores)

    threshold = threshold_for_share(scores, 0.3)

    assert threshold == 0.71
    assert sum(score >= threshold for score in scores) == 30
    assert threshold_for_share(scores, 0.999) == 0.01
    assert threshold_for_share(scores, 0.001) == 1.0


def test_too_few_scores_leave_the_threshold_undecided() -> None:
    assert threshold_for_share([0.5] * (MIN_SCORES - 1), 0.5) is None
    assert threshold_for_share([0.5] * MIN_SCORES, 0.5) == 0.5


@pytest.mark.parametrize("target", [0.3, 0.6, 0.85])
def test_new_turns_from_the_same_distribution_stay_local_at_the_target_share(
    target: float,
) -> None:
    rng = random.Random(11)
    recent = [rng.betavariate(5, 2) for _ in range(500)]
    threshold = threshold_for_share(recent, target)
    assert threshold is not None

    upcoming = [rng.betavariate(5, 2) for _ in range(20_000)]
    local_share = sum(score >= threshold for score in upcoming) / len(upcoming)

    assert local_share == pytest.approx(target, abs=0.04)


async def test_without_a_target_the_configured_threshold_stays(ledger: DecisionLedger) -> None:
    calibrator = ThresholdCalibrator(RoutingOptions(confidence_threshold=0.65))
    await record_scores(ledger, [0.1] * 100)

    assert await calibrator.recalibrate(ledger) == 0.65
    for _ in range(100):
        await calibrator.note_decision(ledger)
    assert calibrator.threshold == 0.65


async def test_the_threshold_follows_the_recent_window(ledger: DecisionLedger) -> None:
    routing = RoutingOptions(
        confidence_threshold=0.5,
        target_local_share=0.5,
        calibration_window=40,
        recalibrate_every=10,
    )
    calibrator = ThresholdCalibrator(routing)
    # Too few scores yet: the configured threshold holds.
    await record_scores(ledger, [0.9] * (MIN_SCORES - 1))
    assert await calibrator.recalibrate(ledger) == 0.5

    # Older turns scored high, the last 40 between 0.2 and 0.4: only those count.
    await record_scores(ledger, [0.9] * 60, start=NOW + timedelta(hours=1))
    await record_scores(
        ledger, [0.2 + 0.2 * n / 39 for n in range(40)], start=NOW + timedelta(hours=2)
    )
    for _ in range(routing.recalibrate_every - 1):
        await calibrator.note_decision(ledger)
    assert calibrator.threshold == 0.5
    await calibrator.note_decision(ledger)
    assert calibrator.threshold == pytest.approx(0.2 + 0.2 * 20 / 39)

    # A restarted router derives the same threshold from the ledger.
    assert await ThresholdCalibrator(routing).recalibrate(ledger) == calibrator.threshold
