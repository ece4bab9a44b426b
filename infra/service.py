"""The contract every long-running service keeps, so `reconguard run` can start them together.

A service is ``async def serve(settings: Settings, *, stop: asyncio.Event) -> None``: it runs
until ``stop`` is set, then finishes its current batch, commits, closes its clients and returns.
"""

from __future__ import annotations

import asyncio
import gc
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from infra.settings import Settings


class Service(Protocol):
    def __call__(self, settings: Settings, *, stop: asyncio.Event) -> Awaitable[None]: ...


#: Allocations between collections of the young generation (Python's default is 700).
GC_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Collect the young generation every ``GC_THRESHOLD`` allocations, and freeze what exists.

    A service allocates a few short-lived objects per message and keeps few. With Python's
    default threshold the collector ran thousands of times a second, each time walking the
    long-lived objects (caches, tables, clients) again. Measured with ``make bench``: about 13%
    more events per second in the streams worker and 15% in the projection. Every reconguard
    process calls this once at start (the CLI, the streams worker, the benchmarks).
    """
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 50, 100)


# --- supervision: what `reconguard run` knows of its services, read by /health and the live view ----------------

def restart_delay(consecutive_crashes: int, *, initial: float, maximum: float) -> float:
    """Exponential backoff: ``initial`` after the first crash, doubling, never above ``maximum``."""
    return min(maximum, initial * 2 ** max(0, consecutive_crashes - 1))


def in_crash_loop(crash_times: Sequence[float], now: float, *, restarts: int, window: float) -> bool:
    """``restarts`` crashes or more within the last ``window`` seconds."""
    return sum(1 for at in crash_times if now - at <= window) >= restarts


@dataclass
class ServiceStatus:
    name: str
    state: str = "starting"  # starting, running, restarting, stopped
    restarts: int = 0
    consecutive_crashes: int = 0
    crash_loop: bool = False
    last_error: str | None = None
    started_at: float | None = None  # time.time()
    crash_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))

    def public(self) -> dict[str, object]:
        return {"state": self.state, "restarts": self.restarts, "crash_loop": self.crash_loop,
                "last_error": self.last_error}


@dataclass
class Supervision:
    """The services of this process and how they fare; empty when nothing supervises them."""

    services: dict[str, ServiceStatus] = field(default_factory=dict)

    def status(self, name: str) -> ServiceStatus:
        return self.services.setdefault(name, ServiceStatus(name))

    def degraded(self) -> list[str]:
        """Services in a crash loop."""
        return sorted(name for name, s in self.services.items() if s.crash_loop)

    def public(self) -> dict[str, dict[str, object]]:
        return {name: s.public() for name, s in sorted(self.services.items())}


#: The one supervision record of this process (`reconguard run` fills it; the API reads it).
SUPERVISION = Supervision()
