"""Telegram messages: the numbers that matter, readable, escaped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from reconguard.telegram.messages import MAX_LENGTH, money, render
from schemas import observed
from schemas.decisions import AccountAssessed, GuardAlertRaised
from schemas.results import PositionClosed, PositionCloseFailed

AT = datetime(2026, 11, 25, 13, 40, 55, tzinfo=UTC)


def _alert(**values: object):
    payload = GuardAlertRaised(
        **(
            {
                "user_id": "alice",
                "alert_type": "drawdown_critical",
                "action_taken": "positions_closed",
                "status": "executed",
                "message": "Closed every position",
                "drawdown_percent": 10.42,
                "equity_gbp": 8958.0,
                "threshold_percent": 10.0,
                "positions_closed_count": 3,
                "total_loss_gbp": -1042.5,
            }
            | values
        )
    )
    return observed(payload, account_id="alice", occurred_at=AT)


def _close(kind=PositionClosed, **values: object):
    payload = kind(
        **(
            {
                "command_id": uuid.uuid4(),
                "user_id": "alice",
                "ticket": 123456,
                "symbol": "EURUSD",
                "reason": "market_gap",
                "direction": "sell",
                "volume": 0.1,
                "retcode": 10009,
                "price": 1.0845,
                "pnl_gbp": 12.3,
                "attempts": 2,
            }
            | values
        )
    )
    return observed(payload, account_id="alice", occurred_at=AT)


@pytest.mark.parametrize(
    ("envelope", "expected"),
    [
        pytest.param(
            _alert(),
            [
                "Drawdown limit breached",
                "alice (MT5 5001)",
                "10.42%",
                "threshold 10.00%",
                "£8,958.00",
                "Positions closed: 3",
                "−£1,042.50",
                "2026-11-25 13:40:55 UTC",
            ],
            id="critical drawdown: account, drawdown, threshold, equity, closes, loss, time",
        ),
        pytest.param(
            _alert(
                alert_type="spread",
                drawdown_percent=None,
                symbol="XAUUSD",
                positions_closed_count=0,
                total_loss_gbp=0.0,
            ),
            ["Spread too wide", "Symbol: XAUUSD"],
            id="market guard names the symbol",
        ),
        pytest.param(
            _close(),
            [
                "Position closed",
                "EURUSD ticket 123456",
                "sell 0.1 lots",
                "Price: 1.0845",
                "£12.30",
                "market gap",
                "10009 (DONE)",
                "2 attempt(s)",
            ],
            id="close: symbol, ticket, price, P&L, reason, retcode",
        ),
        pytest.param(
            _close(PositionCloseFailed, retcode=None, pnl_gbp=None, error_message="ticket gone"),
            ["Close failed", "Retcode not sent", "Error: ticket gone"],
            id="failed close: why",
        ),
    ],
)
def test_messages_carry_the_numbers(envelope, expected):
    text = render(envelope, account="alice (MT5 5001)")
    for part in expected:
        assert part in text, text


def test_outside_text_is_escaped():
    text = render(_alert(message="<script>x</script> & co"), account="<b>alice</b>")
    assert "<script>" not in text and "&lt;script&gt;" in text and "&lt;b&gt;alice" in text


def test_long_messages_fit_telegram():
    assert len(render(_alert(message="x" * 2000), account="a" * 3000)) <= MAX_LENGTH


def test_events_nobody_is_told_about_render_nothing():
    snapshot = AccountAssessed(
        user_id="alice",
        equity_gbp=1,
        balance_gbp=1,
        peak_equity_gbp=1,
        drawdown_percent=0,
        open_positions_count=0,
        total_volume_lots=0,
        open_pnl_gbp=0,
        margin_used_percent=0,
    )
    assert render(observed(snapshot, account_id="alice", occurred_at=AT), account="alice") is None


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(1234.5, "£1,234.50", id="thousands"),
        pytest.param(-0.5, "−£0.50", id="negative"),
        pytest.param(None, "–", id="unknown"),
    ],
)
def test_money(value, text):
    assert money(value) == text
