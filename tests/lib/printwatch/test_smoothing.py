"""The smoother: Obico's exponentially weighted mean, warm-up, warn and pause levels."""

import math

import pytest

from kittyai.printwatch import DEFAULT_WARMUP_FRAMES, PAUSE_FACTOR, Level, Smoother, WatchSettings


def feed(smoother: Smoother, scores: list[float | None]) -> list:
    return [smoother.update(score) for score in scores]


def test_defaults_follow_obico_at_kittys_interval() -> None:
    settings = WatchSettings()

    assert settings.span == 12
    assert settings.alpha == pytest.approx(2 / 13)
    assert settings.warmup_frames == DEFAULT_WARMUP_FRAMES == 30
    assert settings.warn_level == pytest.approx(0.38)
    assert settings.pause_level == pytest.approx(0.38 * 1.75)
    assert PAUSE_FACTOR == 1.75


def test_mean_starts_at_zero_and_weighs_the_newest_score_by_alpha() -> None:
    smoother = Smoother(WatchSettings(warmup_frames=0))
    scores = [0.2, 0.9, 0.0, 0.5]

    results = feed(smoother, scores)

    expected, alpha = 0.0, 2 / 13
    for score, result in zip(scores, results, strict=True):
        expected = alpha * score + (1 - alpha) * expected
        assert result.smoothed == pytest.approx(expected)
        assert result.score == score
    assert results[-1].scores == tuple(scores)


def test_warm_up_frames_never_warn_even_when_every_frame_fails() -> None:
    smoother = Smoother(WatchSettings(warmup_frames=30))

    results = feed(smoother, [1.0] * 31)

    assert all(result.level is Level.OK and result.warming_up for result in results[:30])
    # The mean followed the scores all along: the first judged frame pauses at once.
    assert results[30].smoothed == pytest.approx(1 - (11 / 13) ** 31)
    assert not results[30].warming_up
    assert results[30].level is Level.PAUSE


def test_a_sudden_clear_failure_pauses_on_the_seventh_frame() -> None:
    smoother = Smoother(WatchSettings(warmup_frames=0))

    levels = [result.level for result in feed(smoother, [1.0] * 8)]

    # 1 - (11/13)^n reaches 0.38 at n = 3 and 0.665 at n = 7.
    assert levels == [Level.OK] * 2 + [Level.WARN] * 4 + [Level.PAUSE] * 2


def test_pause_level_is_one_and_three_quarters_the_warn_level() -> None:
    smoother = Smoother(WatchSettings(warmup_frames=0, warn_level=0.2))

    assert smoother.level_of(0.19) is Level.OK
    assert smoother.level_of(0.2) is Level.WARN
    assert smoother.level_of(0.349) is Level.WARN
    assert smoother.level_of(0.351) is Level.PAUSE


def test_sensitivity_scales_the_levels() -> None:
    sensitive = Smoother(WatchSettings(sensitivity=2.0))
    normal = Smoother(WatchSettings())
    relaxed = Smoother(WatchSettings(sensitivity=0.5))

    assert normal.level_of(0.2) is Level.OK
    assert sensitive.level_of(0.2) is Level.WARN
    assert sensitive.level_of(0.34) is Level.PAUSE
    assert normal.level_of(0.7) is Level.PAUSE
    assert relaxed.level_of(0.7) is Level.OK
    assert relaxed.level_of(0.8) is Level.WARN
    # At half the sensitivity the pause level is above any score: it never pauses.
    assert relaxed.level_of(1.0) is Level.WARN


def test_unknown_scores_leave_the_mean_where_it_was() -> None:
    smoother = Smoother(WatchSettings(warmup_frames=0))
    feed(smoother, [1.0] * 3)
    before = smoother.smoothed

    results = feed(smoother, [None] * 20)

    assert all(result.smoothed == before for result in results)
    assert all(result.level is Level.WARN for result in results)
    assert results[-1].scores[-20:] == (None,) * 20


def test_unknown_frames_count_towards_the_warm_up() -> None:
    smoother = Smoother(WatchSettings(warmup_frames=3))

    results = feed(smoother, [None, None, None, 1.0])

    assert [result.warming_up for result in results] == [True, True, True, False]


def test_reset_starts_the_job_afresh() -> None:
    smoother = Smoother(WatchSettings(warmup_frames=2))
    feed(smoother, [1.0] * 10)

    smoother.reset()
    result = smoother.update(1.0)

    assert result.warming_up
    assert result.smoothed == pytest.approx(2 / 13)
    assert result.scores == (1.0,)


def test_for_interval_keeps_the_warm_up_at_five_minutes() -> None:
    assert WatchSettings.for_interval(10).warmup_frames == 30
    assert WatchSettings.for_interval(5).warmup_frames == 60
    assert WatchSettings.for_interval(30).warmup_frames == 10
    assert WatchSettings.for_interval(7).warmup_frames == math.ceil(300 / 7)
    settings = WatchSettings.for_interval(15, warmup_s=60, sensitivity=1.5, warn_level=0.3)
    assert (settings.warmup_frames, settings.sensitivity, settings.warn_level) == (4, 1.5, 0.3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup_frames": -1},
        {"warn_level": 0},
        {"warn_level": 1},
        {"sensitivity": 0},
        {"span": 0},
    ],
)
def test_settings_refuse_what_cannot_work(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        WatchSettings(**kwargs)


def test_for_interval_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        WatchSettings.for_interval(0)
