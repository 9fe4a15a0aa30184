"""The write rate limit: a burst at once, then a steady rate, per token."""

import pytest

from kittyai.orchestrator.ratelimit import WriteRateLimiter


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_goes_through_then_writes_wait_for_the_rate() -> None:
    clock = Clock()
    limiter = WriteRateLimiter(per_minute=60, burst=3, clock=clock)

    assert [limiter.acquire("ha") for _ in range(3)] == [None, None, None]
    assert limiter.acquire("ha") == pytest.approx(1.0)
    clock.now += 0.5
    assert limiter.acquire("ha") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("ha") is None
    assert limiter.acquire("ha") == pytest.approx(1.0)


def test_a_quiet_token_saves_up_no_more_than_the_burst() -> None:
    clock = Clock()
    limiter = WriteRateLimiter(per_minute=120, burst=2, clock=clock)
    limiter.acquire("ha")
    clock.now += 3600

    assert [limiter.acquire("ha") for _ in range(2)] == [None, None]
    assert limiter.acquire("ha") == pytest.approx(0.5)


def test_each_token_has_its_own_bucket() -> None:
    limiter = WriteRateLimiter(per_minute=1, burst=1, clock=Clock())

    assert limiter.acquire("ha") is None
    assert limiter.acquire("ha") == pytest.approx(60.0)
    assert limiter.acquire("node-red") is None
