"""At most one manual sync per account per interval, in this process.

The poller enforces the same limit on the commands it receives (SPEC §3), so several API
replicas can at worst let a few extra commands through, never extra polls.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class SyncLimiter:
    def __init__(self, *, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> int:
        """0 and the slot is taken; otherwise the whole seconds to wait (for Retry-After)."""
        with self._lock:
            now = self._clock()
            self._forget_older_than(now - self._interval)
            last = self._last.get(key)
            if last is not None:
                return max(1, math.ceil(last + self._interval - now))
            self._last[key] = now
            return 0

    def release(self, key: str) -> None:
        """Give the slot back: the command never left (the broker refused it)."""
        with self._lock:
            self._last.pop(key, None)

    def _forget_older_than(self, cutoff: float) -> None:
        # Keeps the map as small as the set of accounts synced in the last interval.
        for key in [k for k, at in self._last.items() if at <= cutoff]:
            del self._last[key]
