"""Capped exponential backoff with jitter, for anything that retries forever."""

import asyncio
import contextlib
from dataclasses import dataclass, field
import random


@dataclass(slots=True)
class Backoff:
    """Delays that double from `initial` up to `maximum` seconds, with jitter.

    The jitter keeps the four KITTY services from hammering a restarted broker or
    Supervisor in lockstep.
    """

    initial: float = 0.5
    maximum: float = 30.0
    _attempt: int = field(default=0, init=False)

    def next_delay(self) -> float:
        """Return how long to wait before the next attempt."""
        delay = min(self.maximum, self.initial * 2.0**self._attempt)
        if delay < self.maximum:
            self._attempt += 1
        # Not cryptographic: only spreads retries over [delay/2, delay].
        return delay * random.uniform(0.5, 1.0)  # noqa: S311

    def reset(self) -> None:
        """Start again from `initial` after a success."""
        self._attempt = 0


async def sleep_unless_set(event: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `event` gets set meanwhile (a stop, typically)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
