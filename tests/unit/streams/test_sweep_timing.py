"""The worker's sweep wakes at a liquidation's deadline, never fires it early, and otherwise keeps its interval.

Virtual time: the sleep advances a clock, so the test reads exactly when each sweep ran. The sweep
is the real rule (``fire_due``) on a real pending liquidation, as ``StreamsRuntime.sweep`` runs it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise

import pytest

from streams.app import MIN_SWEEP_DELAY, sweep_delay, sweep_forever
from streams.drawdown.liquidation import fire_due
from tests.unit.streams.builders import at
from tests.unit.streams.test_drawdown_rules import HELD, readings, run

INTERVAL = 0.2


class VirtualTime:
    """A wall clock moved only by ``sleep``; ``early`` wakes each sleep that much before it is due
    (as an event loop may, by its clock resolution)."""

    def __init__(self, start: datetime, *, early: float = 0.0) -> None:
        self.now, self.early = start, early
        self.sweeps: list[datetime] = []

    async def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=max(0.0, seconds - self.early))

    def clock(self) -> datetime:
        return self.now


async def _sweep_until_fired(time: VirtualTime, *, limit: int = 200) -> tuple[datetime, list[datetime]]:
    """Run the sweep loop over one pending liquidation until it fires; the firing time and every sweep's."""
    state, _ = run(HELD, *readings(10_000, 8_900, 8_800))
    fired: list[datetime] = []

    async def sweep() -> datetime | None:
        nonlocal state
        time.sweeps.append(time.now)
        decision = fire_due(state, time.now)
        if decision.outputs:
            fired.append(time.now)
        state = decision.state
        return None if state.pending is None else state.pending.deadline

    await sweep_forever(sweep, interval=INTERVAL, sleep=time.sleep, clock=time.clock,
                        stopping=lambda: bool(fired) or len(time.sweeps) >= limit)
    assert fired, "the liquidation never fired"
    return fired[0], time.sweeps


@pytest.mark.parametrize("start_offset, early", [
    (0.0, 0.0),  # the deadline on the interval's grid
    (0.037, 0.0),  # off the grid: a fixed timer would fire up to 0.163 s late
    (0.037, 0.0004),  # every sleep wakes a hair early
], ids=["on the grid", "off the grid", "woken early"])
async def test_a_liquidation_fires_at_its_deadline_not_an_interval_after(start_offset: float, early: float) -> None:
    state, _ = run(HELD, *readings(10_000, 8_900, 8_800))
    deadline = state.pending.deadline
    time = VirtualTime(at(3) + timedelta(seconds=start_offset), early=early)
    fired_at, sweeps = await _sweep_until_fired(time)
    assert fired_at >= deadline, "never before the deadline"
    assert fired_at - deadline <= timedelta(seconds=2 * MIN_SWEEP_DELAY), "at the deadline, not an interval after"
    assert all(b - a <= timedelta(seconds=INTERVAL) for a, b in pairwise(sweeps)), "never sleeps past the interval"


def test_the_delay_is_the_interval_unless_a_deadline_comes_sooner() -> None:
    now = at(0)
    assert sweep_delay(now, None, INTERVAL) == INTERVAL, "nothing pending: the interval"
    assert sweep_delay(now, now + timedelta(seconds=5), INTERVAL) == INTERVAL, "far off: the interval"
    assert sweep_delay(now, now + timedelta(seconds=0.05), INTERVAL) == pytest.approx(0.05), "near: until it"
    assert sweep_delay(now, now - timedelta(seconds=1), INTERVAL) == MIN_SWEEP_DELAY, "overdue: at once, never a spin"
