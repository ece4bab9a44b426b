"""Rate limits of the producers: at most one action per key per window.

Pure and clock-injected: the caller passes the time (monotonic seconds for in-memory limits, or
wall-clock datetimes read from a ledger), so tests can step a fake clock instead of waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: Seconds on a monotonic clock; the default is time.monotonic.
MonotonicClock = Callable[[], float]


def retry_after(last: float | None, now: float, window: float) -> float:
    """Seconds until an action last allowed at ``last`` may happen again (0 when it may now)."""
    if last is None:
        return 0.0
    return max(0.0, last + window - now)


def within_window(last: datetime | None, now: datetime, window: timedelta) -> bool:
    """Whether an action at ``now`` falls inside the window opened by the one at ``last``."""
    return last is not None and now - last < window


@dataclass
class KeyedRateLimiter:
    """At most one allowed action per key per ``window`` seconds; refusals are counted, not queued.

    Memory stays bounded by the number of keys (accounts), which the caller controls.
    """

    window: float
    clock: MonotonicClock = time.monotonic
    _last: dict[Hashable, float] = field(default_factory=dict)
    refused: int = 0

    def allow(self, key: Hashable) -> bool:
        """Take the key's slot if it is free; False (and one more refusal) if it is not."""
        now = self.clock()
        if retry_after(self._last.get(key), now, self.window) > 0:
            self.refused += 1
            return False
        self._last[key] = now
        return True

    def retry_after(self, key: Hashable) -> float:
        return retry_after(self._last.get(key), self.clock(), self.window)
