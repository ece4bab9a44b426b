"""Flooding library warnings become one line, then one a minute that counts what was held back."""

from __future__ import annotations

import io
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


def test_each_timer_s_overlaps_are_their_own_kind():
    summary = RepeatSummary(window=60.0, clock=Clock())
    overlap = "Timer %s is overlapping (interval=%r runtime=%r)"
    assert summary.filter(_record(overlap, "commit", 0.25, 0.4, name="mode.timers"))
    assert summary.filter(_record(overlap, "livelock", 1.0, 1.7, name="mode.timers")), "not held as a commit overlap"
    assert not summary.filter(_record(overlap, "livelock", 1.0, 2.2, name="mode.timers"))


def _formatted_by_mode(record: logging.LogRecord) -> tuple[str, list[logging.LogRecord]]:
    """The line mode's formatter (Faust's worker's) writes for ``record``, and the records it failed on."""
    from mode.utils.logging import ExtensionFormatter

    failed: list[logging.LogRecord] = []
    lines: list[str] = []

    class Listing(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

        def handleError(self, record: logging.LogRecord) -> None:
            failed.append(record)

    handler = Listing()
    handler.setFormatter(ExtensionFormatter(io.StringIO(), fmt="%(message)s"))
    handler.handle(record)
    return (lines[-1] if lines else ""), failed


def test_a_summary_line_is_formatted_by_mode_without_a_logging_error():
    clock = Clock()
    summary = RepeatSummary(window=60.0, clock=clock)
    overlap = "Timer %s is overlapping (interval=%r runtime=%r) at 100%% of its interval"
    summary.filter(_record(overlap, "commit", 0.25, 0.4, name="mode.timers"))
    summary.filter(_record(overlap, "commit", 0.25, 0.5, name="mode.timers"))
    clock.now = 61.0
    record = _record(overlap, "commit", 0.25, 0.6, name="mode.timers")
    assert summary.filter(record)
    line, failed = _formatted_by_mode(record)
    assert failed == [], "no '--- Logging error ---'"
    assert line == "Timer commit is overlapping (interval=0.25 runtime=0.6) at 100% of its interval " \
                   "(and 1 more like it in the last 61 s)"


def test_a_redacted_line_is_formatted_by_mode_without_a_logging_error():
    from infra.logredact import RedactingFilter

    record = _record("GET %s failed at 100%%", "https://api.telegram.org/bot987654321:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ/x",
                     name="aiogram")
    assert RedactingFilter().filter(record)
    line, failed = _formatted_by_mode(record)
    assert failed == [] and line == "GET https://api.telegram.org/bot***/x failed at 100%"
