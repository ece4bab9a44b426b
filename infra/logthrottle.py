"""Library warnings that repeat in floods, summarised: the first passes, then one a minute with a count.

Faust warns "producer buffer full size N" each time its table buffer passes 100 pending messages
(a class constant), which a busy worker does many times a second; mode warns "Timer commit is
overlapping" each time a commit takes longer than its interval under load (and "Timer livelock is
overlapping" for Faust's commit watchdog). Both are load facts, worth one line, not hundreds.
Records are grouped by their logger, their message with numbers blanked and their text arguments
(a timer's name), so "buffer full size 101" and "buffer full size 250" are one kind, and the
commit timer's overlaps and the livelock timer's are two.

A summary line is the message formatted once, with ``args=()``: mode's formatter turns any other
``args`` (None included) into a tuple and formats the message with it again, which fails and
prints "--- Logging error ---" with a traceback instead of the line.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

#: Loggers whose warnings come in floods under load.
NOISY_LOGGERS = ("faust.transport.producer", "mode.timers", "faust.transport.consumer", "faust.tables.table")

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class RepeatSummary(logging.Filter):
    """Lets the first record of a kind through, then at most one per ``window`` seconds, which says
    how many like it were held back since the last one passed."""

    def __init__(self, *, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window, self.clock = window, clock
        self._seen: dict[tuple[str, str, tuple[str, ...]], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, _NUMBER.sub("#", str(record.msg)), _names(record.args))
        now = self.clock()
        with self._lock:
            started, held = self._seen.get(key, (None, 0))
            if started is not None and now - started < self.window:
                self._seen[key] = (started, held + 1)
                return False
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.getMessage()} (and {held} more like it in the last {now - started:.0f} s)"
            record.args = ()
        return True


def _names(args: object) -> tuple[str, ...]:
    """The text arguments of a record (which timer, which topic), its numbers left out."""
    return tuple(arg for arg in args if isinstance(arg, str)) if isinstance(args, tuple) else ()


_FILTER = RepeatSummary()


def install() -> None:
    """Summarise the noisy libraries' repeated records in this process (safe to call again)."""
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
