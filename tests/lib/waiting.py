"""Polling for conditions that real peers make true in their own time."""

import asyncio
from collections.abc import Callable
import time


async def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Return once `condition()` is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
