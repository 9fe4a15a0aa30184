"""Write rate limits of the orchestrator's API: one token bucket per API token.

A bucket holds up to `burst` writes and refills at `per_minute / 60` writes a
second, so a client may send a short burst but not a steady flood. Buckets are
keyed by the token's name, never by the token itself, and live in memory: a
restart forgives everyone, which is fine for a limit meant to stop runaway
automations, not attackers (they do not have a token).
"""

from collections.abc import Callable
from dataclasses import dataclass
import time


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class WriteRateLimiter:
    """Token buckets, one per API token name."""

    def __init__(
        self, *, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Allow `burst` writes at once and `per_minute` writes a minute in the long run."""
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str) -> float | None:
        """Take one write for `key`: None when allowed, else the seconds until one is."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        else:
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self._rate
