"""The account lock: set by a liquidation, closes new positions at once, ends by day or by an admin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import Envelope, derived, observed
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from schemas.locks import LockEnd, LockKind, UnlockAccount
from streams.drawdown.liquidation import fire_due
from streams.drawdown.lock import locked
from streams.drawdown.state import DrawdownState
from streams.state import dump_state, load_state
from tests.unit.streams.builders import USER, account, at, position, positions
from tests.unit.streams.test_drawdown_rules import HELD, LEVELS, readings, run


def commands(outputs: list[Envelope[Any]]) -> list[tuple[str, tuple[int, ...], CloseReason]]:
    return [(o.payload.symbol, o.payload.tickets, o.payload.reason) for o in outputs if o.event_type == "ClosePosition"]


def of_type(outputs: list[Envelope[Any]], event_type: str) -> list[Any]:
    return [o.payload for o in outputs if o.event_type == event_type]


def liquidated(*, levels: Any = LEVELS, equities: tuple[float, ...] = (10_000, 8_900, 8_800)
               ) -> tuple[DrawdownState, list[Envelope[Any]]]:
    """An account whose drawdown guard fired, with its close commands read back (as the worker does)."""
    state, _ = run(HELD, *readings(*equities), levels=levels)
    fired = fire_due(state, state.pending.deadline)
    orders = [o for o in fired.outputs if o.event_type == "ClosePosition"]
    return run(*orders, state=fired.state, levels=levels)


def unlock_command(*, t: float, by: str = "u-admin", reason: str = "reviewed with the trader") -> Envelope[Any]:
    return observed(UnlockAccount(user_id=USER, requested_by=by, reason=reason), account_id=USER, occurred_at=at(t))


def test_a_liquidation_locks_the_account_once_with_an_event_for_the_platform():
    state, outputs = liquidated()
    locked = of_type(outputs, "AccountLocked")
    assert len(locked) == 1, "the second symbol's close command does not lock again"
    assert (locked[0].kind, locked[0].ends) == (LockKind.DRAWDOWN, LockEnd.ADMIN_UNLOCK)
    assert "approve no trade" in locked[0].message
    assert state.lock is not None and state.lock.lock_id == next(
        o.event_id for o in outputs if o.event_type == "AccountLocked")


def test_a_close_by_another_guard_does_not_lock():
    state, _ = run(HELD, *readings(10_000, 10_000))
    market = derived(commands_for(CloseReason.SPREAD), cause=HELD, rule="spread/close/XAUUSD")
    state, outputs = run(market, state=state)
    assert state.lock is None and of_type(outputs, "AccountLocked") == []


def commands_for(reason: CloseReason) -> ClosePosition:
    return ClosePosition(user_id=USER, symbol="XAUUSD", tickets=(1003,), reason=reason, rule=f"{reason.value}/close")


def test_while_locked_a_new_position_is_closed_at_once_with_no_warning_and_no_grace():
    state, _ = liquidated()
    still_closing = [position(1001, profit_gbp=-400), position(1002, profit_gbp=-300)]
    new = position(2001, symbol="GBPUSD", opened=20)
    state, outputs = run(positions(*still_closing, new, t=20), account(8_700, t=20.5), account(8_700, t=21),
                         state=state)
    assert commands(outputs) == [("GBPUSD", (2001,), CloseReason.ACCOUNT_LOCKED)], \
        "only the new position: the liquidation's own tickets are the liquidation's"
    assert of_type(outputs, "GuardAlertRaised") == [], "no new warning, no new grace"
    assert state.pending is None

    state, again = run(positions(*still_closing, new, t=22), state=state)
    assert commands(again) == [], "ordered once; re-ordered only after reclose_after_seconds"
    _, later = run(positions(new, t=20 + 31), state=state)
    assert commands(later) == [("GBPUSD", (2001,), CloseReason.ACCOUNT_LOCKED)]


def test_an_admin_unlock_ends_a_drawdown_lock_with_who_and_why_and_rebases_the_peak():
    state, _ = liquidated()
    state, _ = run(positions(t=30), account(8_800, t=31), state=state)
    state, outputs = run(unlock_command(t=40), state=state)
    unlocked = of_type(outputs, "AccountUnlocked")
    assert [(u.unlocked_by, u.reason, u.kind) for u in unlocked] == [
        ("u-admin", "reviewed with the trader", LockKind.DRAWDOWN)]
    assert unlocked[0].lock_id is not None and not locked(state)
    assert (state.peak_equity_gbp, state.day_start_equity_gbp) == (8_800, 8_800), \
        "the admin accepted the loss: the high-water mark and the day's start begin again"

    state, outputs = run(positions(position(3001, opened=41), t=41), account(8_800, t=42), account(8_790, t=43),
                         state=state)
    assert commands(outputs) == [] and of_type(outputs, "GuardAlertRaised") == [], "trading again"


def test_a_late_or_retried_command_of_the_same_liquidation_does_not_lock_again_but_a_new_one_does():
    state, _ = run(HELD, *readings(10_000, 8_900, 8_800))
    fired = fire_due(state, state.pending.deadline)
    order = next(o for o in fired.outputs if o.event_type == "ClosePosition")
    state, _ = run(order, unlock_command(t=40), state=fired.state)
    assert not locked(state)

    retry = derived(order.payload, cause=order, rule="retry/1")  # derived from the same trigger
    state, outputs = run(retry, state=state)
    assert not locked(state) and of_type(outputs, "AccountLocked") == []

    another = derived(order.payload, cause=account(8_000, t=100), rule="drawdown_guard/close/EURUSD")
    state, outputs = run(another, state=state)
    assert locked(state) and len(of_type(outputs, "AccountLocked")) == 1


def test_an_unlock_for_an_account_that_is_not_locked_changes_nothing():
    state, _ = run(HELD, *readings(10_000, 10_000))
    again, outputs = run(unlock_command(t=5), state=state)
    assert again is state and outputs == []


def test_a_daily_loss_lock_ends_at_the_next_broker_day():
    levels = LEVELS.model_copy(update={"daily_loss_limit_percent": 3, "critical_drawdown_percent": 50,
                                       "warning_drawdown_percent": 40})
    state, outputs = liquidated(levels=levels, equities=(10_000, 9_650, 9_600))
    assert [(lock.kind, lock.ends) for lock in of_type(outputs, "AccountLocked")] == [
        (LockKind.DAILY_LOSS, LockEnd.NEXT_BROKER_DAY)]
    day = state.day
    same_day, outputs = run(account(9_600, t=50), state=state, levels=levels)
    assert locked(same_day) and of_type(outputs, "AccountUnlocked") == []

    midnight = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1, seconds=5)
    state, outputs = run(account(9_600, t=60, server_time=midnight), state=same_day, levels=levels)
    unlocked = of_type(outputs, "AccountUnlocked")
    assert [(u.unlocked_by, u.kind) for u in unlocked] == [("system", LockKind.DAILY_LOSS)]
    assert "new broker day" in unlocked[0].reason and not locked(state)


def test_the_lock_survives_its_state_written_and_read_back():
    state, _ = liquidated()
    state, _ = run(positions(position(2001, symbol="GBPUSD"), t=20), state=state)
    assert load_state(DrawdownState, dump_state(state)) == state


def test_a_position_report_redelivered_after_the_liquidation_closed_its_positions_orders_no_close():
    """Found by faultsim seed 181: a worker restored from its changelog reads again a report from before
    the liquidation; the lock took the liquidated positions in it for new ones and ordered their close."""
    state, _ = liquidated()
    state, _ = run(positions(t=30), state=state)  # the liquidation closed them
    _, outputs = run(positions(position(1001, profit_gbp=-400), position(1002, profit_gbp=-300), t=25), state=state)
    assert commands(outputs) == []
