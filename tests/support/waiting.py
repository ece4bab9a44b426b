"""Wait for a condition with a timeout, never for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], *, until: Callable[[T], bool] = bool, timeout: float = 30.0,
    interval: float = 0.1, what: str = "condition",
) -> T:
    """Call ``probe`` until ``until(result)`` holds; return that result or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    result = await probe()
    while not until(result):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {result!r}")
        await asyncio.sleep(interval)
        result = await probe()
    return result
