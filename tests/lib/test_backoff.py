"""Retry delays: doubling, capped, jittered, and reset after a success."""

from kittyai.backoff import Backoff


def test_delays_double_up_to_the_cap_with_jitter() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0)

    delays = [backoff.next_delay() for _ in range(8)]

    for delay, ceiling in zip(delays, [0.5, 1, 2, 4, 4, 4, 4, 4], strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_reset_starts_over() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0)
    for _ in range(5):
        backoff.next_delay()

    backoff.reset()

    assert backoff.next_delay() <= 0.5
