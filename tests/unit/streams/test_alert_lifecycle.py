"""A guard alert from its close commands to what the executor confirmed: one lifecycle, each state once."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from infra.settings import GuardSettings
from schemas import Envelope, observed
from schemas.commands import ClosePosition
from schemas.common import CloseReason, DealReason, Direction
from schemas.results import (
    PositionClosed,
    PositionCloseDeferred,
    PositionCloseFailed,
    PositionCloseSuperseded,
)
from streams.alerts.lifecycle import due, fire_due, handle
from streams.alerts.state import AlertsState
from streams.state import dump_state, load_state
from tests.unit.streams.builders import USER, at, deal, position, positions

CONFIG = GuardSettings(liquidation_fast_retries=2, liquidation_retry_seconds=2, liquidation_escalated_retry_seconds=60)
DRAWDOWN_ALERT, MARKET_ALERT = uuid.UUID(int=1), uuid.UUID(int=2)


def command(tickets: tuple[int, ...], *, symbol: str = "EURUSD", t: float = 10, alert: uuid.UUID = DRAWDOWN_ALERT,
            reason: CloseReason = CloseReason.DRAWDOWN_GUARD, every: tuple[int, ...] = ()) -> Envelope[ClosePosition]:
    payload = ClosePosition(user_id=USER, symbol=symbol, tickets=tickets, reason=reason, rule=f"{reason.value}/close",
                            details={"drawdown_percent": 10.5, "equity_gbp": 8950.0, "threshold_percent": 10.0},
                            alert_id=alert, alert_tickets=every)
    return observed(payload, account_id=USER, occurred_at=at(t))


def result(of: Envelope[ClosePosition], ticket: int, kind: type = PositionClosed, *, t: float = 11,
           **fields: Any) -> Envelope[Any]:
    c = of.payload
    base: dict[str, Any] = {"command_id": of.event_id, "user_id": USER, "ticket": ticket, "symbol": c.symbol, "reason": c.reason,
                                "direction": Direction.BUY, "volume": 0.1, "attempts": 1, "alert_id": c.alert_id}
    if kind is PositionClosed:
        base |= {"retcode": 10009, "price": 1.095, "entry_price": 1.1, "pnl": -50.0, "pnl_gbp": -50.0}
    return observed(kind(**(base | fields)), account_id=USER, occurred_at=at(t))


def run(*events: Envelope[Any], state: AlertsState | None = None) -> tuple[AlertsState, list[Envelope[Any]]]:
    state = state or AlertsState()
    outputs: list[Envelope[Any]] = []
    for event in events:
        decision = handle(state, event, CONFIG)
        state, outputs = decision.state, outputs + list(decision.outputs)
    return state, outputs


def states(outputs: list[Envelope[Any]]) -> list[tuple[str, str, int, int, float]]:
    return [(o.payload.status, o.payload.action_taken.value, o.payload.revision, o.payload.positions_closed_count,
             o.payload.total_loss_gbp) for o in outputs if o.event_type == "GuardAlertRaised"]


def test_a_liquidation_is_confirmed_with_the_count_realised_loss_and_time_of_the_last_close():
    eurusd = command((1001, 1002), every=(1001, 1002, 1003))
    xauusd = command((1003,), symbol="XAUUSD", every=(1001, 1002, 1003))
    state, outputs = run(eurusd, xauusd, result(eurusd, 1001, t=11), result(eurusd, 1002, t=12, pnl_gbp=-20.0))
    assert states(outputs) == [("ordered", "warning_sent", 1, 0, 0.0)], "waits for every ticket of the alert"
    _, outputs = run(result(xauusd, 1003, t=13, pnl_gbp=30.0), state=state)
    (confirmed,) = [o.payload for o in outputs]
    assert (confirmed.status, confirmed.action_taken.value, confirmed.positions_closed_count) == (
        "executed", "positions_closed", 3)
    assert confirmed.total_loss_gbp == 40.0, "realised: -50 - 20 + 30"
    assert confirmed.executed_at == at(13) and confirmed.alert_id == DRAWDOWN_ALERT and confirmed.revision == 2


def test_the_market_and_drawdown_guards_closing_one_position_make_one_close_and_no_failure():
    gap = command((1003,), symbol="XAUUSD", alert=MARKET_ALERT, reason=CloseReason.MARKET_GAP, t=10)
    liquidation = command((1003,), symbol="XAUUSD", t=10.1)
    by_gap = result(gap, 1003, t=10.5, pnl_gbp=-80.0)
    superseded = result(liquidation, 1003, PositionCloseSuperseded, t=10.6, closed_by="close_command",
                        superseded_by_command=gap.event_id.hex[:16])
    _, outputs = run(gap, liquidation, by_gap, superseded)
    by_alert = {o.payload.alert_id: o.payload for o in outputs if o.payload.status != "ordered"}
    assert (by_alert[MARKET_ALERT].status, by_alert[MARKET_ALERT].positions_closed_count,
            by_alert[MARKET_ALERT].total_loss_gbp) == ("executed", 1, 80.0)
    drawdown = by_alert[DRAWDOWN_ALERT]
    assert (drawdown.status, drawdown.action_taken.value, drawdown.positions_closed_count) == (
        "superseded", "warning_sent", 0)
    assert f"command {gap.event_id.hex[:16]} (market_gap)" in drawdown.message, "names what closed it"
    assert not [o for o in outputs if o.payload.status in ("failed", "escalated")]


def test_a_refused_close_is_retried_fast_with_backoff_then_escalated_then_retried_until_flat():
    first = command((1001,))
    state, outputs = run(first, result(first, 1001, PositionCloseFailed, t=11, retcode=10004, error_message="requote"))
    assert states(outputs)[-1][:2] == ("failed", "failed")
    assert "could not close 1 position(s) (1001: requote)" in outputs[-1].payload.message
    sent, when = [], at(11)
    for delay in (2, 4, 60, 60):  # two fast retries (doubling), then the escalated cadence
        assert not due(state, when + timedelta(seconds=delay - 0.1), CONFIG)
        when += timedelta(seconds=delay)
        fired = fire_due(state, when, CONFIG)
        (retry,) = fired.outputs
        assert (retry.payload.tickets, retry.payload.alert_id, retry.payload.reason) == (
            (1001,), DRAWDOWN_ALERT, CloseReason.DRAWDOWN_GUARD)
        sent.append(retry.payload.attempt)
        state, published = run(retry, result(retry, 1001, PositionCloseFailed, t=(when - at(0)).total_seconds(),
                                             retcode=10004, error_message="requote"), state=fired.state)
        outputs += published
    assert sent == [2, 3, 4, 5]
    assert [s[0] for s in states(outputs)] == ["ordered", "failed", "escalated"], "each state once"
    assert outputs[-1].payload.message.startswith("liquidation failed: 1 position(s) still open")
    when += timedelta(seconds=60)
    fired = fire_due(state, when, CONFIG)
    (retry,) = fired.outputs
    _, published = run(retry, result(retry, 1001, t=(when - at(0)).total_seconds()), state=fired.state)
    assert states(published) == [("executed", "positions_closed", 4, 1, 50.0)]


def test_market_closed_waits_for_the_next_open_without_a_failure():
    first = command((1001,))
    opens = at(3600)
    state, outputs = run(first, result(first, 1001, PositionCloseDeferred, retcode=10018, retry_at=opens,
                                       error_message="10018: Market closed"))
    assert [s[0] for s in states(outputs)] == ["ordered", "waiting"]
    assert not due(state, opens - timedelta(seconds=1), CONFIG)
    (retry,) = fire_due(state, opens, CONFIG).outputs
    _, outputs = run(retry, result(retry, 1001, t=3601), state=fire_due(state, opens, CONFIG).state)
    assert [s[:2] for s in states(outputs)] == [("executed", "positions_closed")]


def test_a_refused_ticket_closed_later_by_its_stop_ends_the_alert_with_that_reason():
    first = command((1001,))
    state, _ = run(first, result(first, 1001, PositionCloseFailed, retcode=10004, error_message="requote"))
    stopped = positions(t=12, deals=(deal(1001, reason=DealReason.SL, t=11.5),))
    state, outputs = run(stopped, state=state)
    (ended,) = [o.payload for o in outputs]
    assert (ended.status, ended.positions_closed_count) == ("superseded", 0)
    assert "1001 by sl (deal 501001)" in ended.message
    assert not due(state, at(1000), CONFIG), "nothing left to retry"


def test_a_position_still_open_is_not_taken_for_closed():
    first = command((1001,))
    state, _ = run(first, result(first, 1001, PositionCloseFailed, retcode=10004, error_message="requote"))
    _, outputs = run(positions(position(1001), t=12), state=state)
    assert outputs == []


def test_redeliveries_change_nothing():
    first = command((1001,))
    closed = result(first, 1001)
    state, outputs = run(first, closed)
    again, more = run(first, closed, state=state)
    assert len(states(outputs)) == 2 and more == [] and again == state


def test_a_close_without_an_alert_is_not_tracked():
    plain = observed(ClosePosition(user_id=USER, symbol="EURUSD", tickets=(5,), reason=CloseReason.SPREAD, rule="x"),
                     account_id=USER, occurred_at=at(1))
    state, outputs = run(plain)
    assert state == AlertsState() and outputs == []


def test_the_state_survives_its_table_round_trip():
    first = command((1001, 1002))
    state, _ = run(first, result(first, 1001), result(first, 1002, PositionCloseDeferred, retcode=10018,
                                                      retry_at=at(99), error_message="closed"))
    assert load_state(AlertsState, json.loads(json.dumps(dump_state(state)))) == state


def test_a_close_the_executor_never_answers_counts_as_refused_and_is_retried():
    first = command((1001,), t=10)
    state, _ = run(first)
    assert not due(state, at(39), CONFIG), "the executor has 30 s to answer"
    fired = fire_due(state, at(40), CONFIG)
    (failed,) = [o.payload for o in fired.outputs]
    assert (failed.status, failed.action_taken.value) == ("failed", "failed")
    assert "no answer from the executor within 30 s" in failed.message
    (retry,) = fire_due(fired.state, at(42), CONFIG).outputs
    assert (retry.payload.tickets, retry.payload.attempt) == ((1001,), 2)
    late_success = result(first, 1001, t=43)
    _, outputs = run(late_success, state=fire_due(fired.state, at(42), CONFIG).state)
    assert [o.payload.status for o in outputs] == ["executed"], "a late confirmation still counts"


def test_an_admins_unlock_stops_the_retries_of_a_failed_liquidation_and_says_what_is_left_open():
    from schemas.locks import UnlockAccount

    first = command((1001,))
    state, outputs = run(first, result(first, 1001, PositionCloseFailed, t=11, retcode=10004, error_message="requote"))
    assert due(state, at(13), CONFIG), "a retry is due"
    unlock = observed(UnlockAccount(user_id=USER, requested_by="ops-admin", reason="closing by phone"),
                      account_id=USER, occurred_at=at(12))
    state, published = run(unlock, state=state)
    (stopped,) = [o.payload for o in published]
    assert (stopped.status, stopped.action_taken.value, stopped.positions_closed_count) == ("stopped", "failed", 0)
    assert stopped.message == "retries stopped by ops-admin (closing by phone): 1 position(s) left open (1001: requote)"
    assert not due(state, at(1000), CONFIG) and fire_due(state, at(1000), CONFIG).outputs == (), "no retry after it"
    assert run(unlock, state=state)[1] == [], "a repeated unlock changes nothing"


def test_an_answer_read_before_its_command_is_kept_and_confirms_the_alert_when_the_command_comes():
    """Commands and results are on two topics, read in no set order: the executor's answer can come first.
    Dropped, the alert would wait out the answer timeout, tell the owner the close failed and retry it."""
    eurusd = command((1001,), every=(1001,))
    early = result(eurusd, 1001, t=10.2)
    state, outputs = run(early, early)  # redelivered too
    assert outputs == [] and len(state.early) == 1
    state, outputs = run(eurusd, state=state)
    assert states(outputs) == [("ordered", "warning_sent", 1, 0, 0.0), ("executed", "positions_closed", 2, 1, 50.0)]
    assert outputs[-1].payload.executed_at == at(10.2) and state.early == {}
    assert not due(state, at(10 + 120), CONFIG), "nothing is retried"
    assert load_state(AlertsState, json.loads(json.dumps(dump_state(state)))) == state


def test_a_refusal_read_before_a_second_symbols_command_is_a_failure_of_that_command():
    eurusd = command((1001,), every=(1001, 1003))
    xauusd = command((1003,), symbol="XAUUSD", every=(1001, 1003))
    state, outputs = run(eurusd, result(xauusd, 1003, PositionCloseFailed, t=10.3, retcode=10006,
                                        error_message="rejected"), result(eurusd, 1001, t=10.4))
    assert states(outputs) == [("ordered", "warning_sent", 1, 0, 0.0)], "the XAUUSD command is not read yet"
    _, outputs = run(xauusd, state=state)
    assert [s[0] for s in states(outputs)] == ["failed"], "the refusal counts once its command is read"
