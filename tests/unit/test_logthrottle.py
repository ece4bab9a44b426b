"""Flooding library warnings become one line, then one a minute that counts what was held back."""

from __future__ import annotations

import logging

from infra.logthrottle import RepeatSummary


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(message: str, *args: object, name: str = "faust.transport.producer") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, None)


def test_a_flood_passes_once_then_once_a_window_with_the_count_held_back():
    clock = Clock()
    summary = RepeatSummary(window=60.0, clock=clock)
    passed = []
    for second in range(150):
        clock.now = float(second)
        for size in (101, 250):  # numbers differ, the kind is the same
            record = _record(f"producer buffer full size {size}")
            if summary.filter(record):
                passed.append((second, record.getMessage()))
    assert passed == [
        (0, "producer buffer full size 101"),
        (60, "producer buffer full size 101 (and 119 more like it in the last 60 s)"),
        (120, "producer buffer full size 101 (and 119 more like it in the last 60 s)"),
    ]


def test_different_kinds_and_loggers_are_counted_apart():
    summary = RepeatSummary(window=60.0, clock=Clock())
    records = [_record("Timer %s is overlapping (interval=%r runtime=%r)", "commit", 2.8, 3.1, name="mode.timers"),
               _record("producer buffer full size 101"),
               _record("producer buffer full size 101", name="other")]
    assert [summary.filter(r) for r in records] == [True, True, True]
    assert summary.filter(_record("Timer %s is overlapping (interval=%r runtime=%r)", "commit", 2.8, 9.0,
                                  name="mode.timers")) is False
