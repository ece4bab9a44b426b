"""Rate limits with a stepped clock: one action per key per window, refusals counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from producers.ratelimit import KeyedRateLimiter, retry_after, within_window


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_action_per_key_per_window() -> None:
    clock = FakeClock()
    limiter = KeyedRateLimiter(10.0, clock)
    assert limiter.allow("u-1")
    clock.now += 9.9
    assert not limiter.allow("u-1")
    assert limiter.allow("u-2"), "another key has its own window"
    assert limiter.retry_after("u-1") == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.allow("u-1")
    assert limiter.refused == 1


def test_a_refusal_does_not_extend_the_window() -> None:
    clock = FakeClock()
    limiter = KeyedRateLimiter(10.0, clock)
    limiter.allow("u-1")
    for _ in range(5):
        clock.now += 1.0
        limiter.allow("u-1")
    clock.now += 5.0
    assert limiter.allow("u-1")


@pytest.mark.parametrize(("last", "now", "expected"), [
    pytest.param(None, 5.0, 0.0, id="never acted: free now"),
    pytest.param(0.0, 4.0, 6.0, id="inside the window"),
    pytest.param(0.0, 12.0, 0.0, id="after the window"),
])
def test_retry_after(last: float | None, now: float, expected: float) -> None:
    assert retry_after(last, now, 10.0) == expected


def test_within_window_on_wall_clock() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    window = timedelta(seconds=30)
    assert within_window(t, t + timedelta(seconds=29.9), window)
    assert not within_window(t, t + timedelta(seconds=30), window)
    assert not within_window(None, t, window)
