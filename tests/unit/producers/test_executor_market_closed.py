"""After "market closed" (10018) the executor answers when to try again: the calendar's next open, or a
minute later when the calendar knows none or disagrees with the terminal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from producers.executor.loop import MARKET_CLOSED_RETRY, Executor, ExecutorConfig, NextOpen, no_calendar

NOW = datetime(2026, 12, 5, 21, 30, tzinfo=UTC)  # a Saturday's evening
MONDAY = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)


def executor(next_open: NextOpen) -> Executor:
    none: Any = None  # _retry_at reads only the configuration and the clock
    return Executor(gateways={}, ledger=none, producer=none, prefix="t", config=ExecutorConfig(next_open=next_open),
                    clock=lambda: NOW)


@pytest.mark.parametrize(("description", "next_open", "retry_at"), [
    ("the calendar's next open", lambda symbol, at: MONDAY, MONDAY),
    ("no calendar: a minute later", no_calendar, NOW + MARKET_CLOSED_RETRY),
    ("the calendar knows no open", lambda symbol, at: None, NOW + MARKET_CLOSED_RETRY),
    ("the calendar thinks it open: a minute later, never at once", lambda symbol, at: at, NOW + MARKET_CLOSED_RETRY),
    ("an open in the past is no answer", lambda symbol, at: at - timedelta(hours=1), NOW + MARKET_CLOSED_RETRY),
])
def test_when_a_market_closed_refusal_is_tried_again(description: str, next_open: NextOpen,
                                                     retry_at: datetime) -> None:
    assert executor(next_open)._retry_at("XAUUSD") == retry_at, description
