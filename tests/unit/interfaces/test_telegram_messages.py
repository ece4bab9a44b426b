"""Telegram messages: the numbers that matter, readable, escaped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconguard.telegram.messages import MAX_LENGTH, money, render
from schemas import observed
from schemas.decisions import AccountAssessed, GuardAlertRaised

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
            _alert(revision=2, total_loss_gbp=30.0, details={"tickets": {
                "1001": {"symbol": "EURUSD", "status": "closed", "pnl_gbp": -50.0, "why": None},
                "1003": {"symbol": "XAUUSD", "status": "superseded", "pnl_gbp": None,
                         "why": "command 0123456789abcdef (market_gap)"}}}),
            ["✅ Positions closed · Drawdown limit breached", "EURUSD ticket 1001: closed, P&amp;L <b>−£50.00</b>",
             "XAUUSD ticket 1003: already closed by command 0123456789abcdef (market_gap)"],
            id="confirmed: each ticket with its realised P&L, or what closed it",
        ),
        pytest.param(
            _alert(revision=3, status="escalated", action_taken="failed", positions_closed_count=0,
                   total_loss_gbp=0.0, message="liquidation failed: 1 position(s) still open",
                   details={"tickets": {"1002": {"symbol": "EURUSD", "status": "failed", "why": "10004: Requote"}}}),
            ["🚨 Liquidation failed · Drawdown limit breached", "liquidation failed: 1 position(s) still open",
             "EURUSD ticket 1002: still open: 10004: Requote"],
            id="escalated: which positions remain open, and why",
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


@pytest.mark.parametrize(("revision", "status", "told"), [
    pytest.param(0, "open", True, id="the warning"),
    pytest.param(0, "ordered", True, id="the market guard's first word: closing"),
    pytest.param(1, "ordered", False, id="a liquidation ordered: nothing a person must act on"),
    pytest.param(2, "executed", True, id="confirmed"),
    pytest.param(2, "failed", True, id="failed"),
    pytest.param(3, "escalated", True, id="escalated"),
    pytest.param(2, "waiting", False, id="waiting for the market to open"),
    pytest.param(2, "superseded", False, id="every position closed by something else"),
])
def test_one_message_per_alert_state_a_person_needs(revision, status, told):
    rendered = render(_alert(revision=revision, status=status), account="alice")
    assert (rendered is not None) == told


def test_a_lock_says_why_and_how_it_ends_and_an_unlock_says_who_and_why():
    from schemas.locks import AccountLocked, AccountUnlocked, LockEnd, LockKind

    locked = observed(AccountLocked(user_id="dave", kind=LockKind.DRAWDOWN, ends=LockEnd.ADMIN_UNLOCK,
                                    message="drawdown 10.4% <b>"), account_id="dave", occurred_at=AT)
    text = render(locked, account="dave (MT5 5004)")
    assert text.startswith("<b>🔒 Account locked</b> — account <b>dave (MT5 5004)</b>")
    assert "when an admin unlocks it" in text and "drawdown 10.4% &lt;b&gt;" in text, "escaped"
    unlocked = observed(AccountUnlocked(user_id="dave", lock_id=locked.event_id, kind=LockKind.DAILY_LOSS,
                                        unlocked_by="ops-admin", reason="loss reviewed"),
                        account_id="dave", occurred_at=AT)
    text = render(unlocked, account="dave")
    assert "🔓 Account unlocked" in text and "Daily loss lock ended by ops-admin: loss reviewed" in text
