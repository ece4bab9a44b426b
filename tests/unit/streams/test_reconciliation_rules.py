"""Reconciliation rules: each outcome, its reporting once, its resolution, and indeterminacy."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.settings import GuardSettings
from schemas import Envelope
from schemas.commands import ClosePosition
from schemas.common import CloseReason, DealReason, Direction
from schemas.decisions import Matched, ReconciliationStatus
from streams.reconciliation.rules import handle
from streams.reconciliation.state import ReconciliationState
from tests.unit.streams.builders import (
    USER,
    approved,
    close_result,
    deal,
    platform_closed,
    position,
    positions,
    sync_failed,
)

CONFIG = GuardSettings()


def run(*events: Envelope[Any], state: ReconciliationState | None = None, config: GuardSettings = CONFIG
        ) -> tuple[ReconciliationState, list[Envelope[Any]]]:
    state = state or ReconciliationState()
    outputs: list[Envelope[Any]] = []
    for event in events:
        decision = handle(state, event, config)
        state, outputs = decision.state, outputs + list(decision.outputs)
    return state, outputs


def kinds(outputs: list[Envelope[Any]]) -> list[tuple[str, str | None]]:
    return [(o.event_type, getattr(o.payload, "divergence_reason", None) and o.payload.divergence_reason.value)
            for o in outputs]


def test_a_position_that_matches_is_reported_matched_once():
    _, outputs = run(approved(), positions(position(), t=2), positions(position(), t=3))
    assert kinds(outputs) == [("PositionMatched", None)]
    record = outputs[0].payload
    assert (record.matched, record.status, record.mt5_position_id) == (Matched.MATCHED, ReconciliationStatus.MATCHED, 1001)


@pytest.mark.parametrize("description, observed, reason", [
    ("sold instead of bought", position(direction=Direction.SELL, sl=1.11, tp=1.08), "direction_mismatch"),
    ("half the volume", position(volume=0.05), "volume_mismatch"),
    ("filled 20 pips away", position(price_open=1.102), "slippage"),
    ("stop loss moved", position(sl=1.085), "sl_tp_drift"),
    ("take profit removed", position(tp=None), "sl_tp_drift"),
])
def test_each_mismatch_of_a_matched_position_is_a_divergence(description, observed, reason):
    _, outputs = run(approved(ticket=1001), positions(observed))
    reasons = [o.payload.divergence_reason.value for o in outputs if o.event_type == "DivergenceDetected"]
    assert reason in reasons, description
    detected = next(o.payload for o in outputs if o.payload.divergence_reason == reason)
    assert (detected.matched, detected.status) == (Matched.DIVERGENCE, ReconciliationStatus.DIVERGENCE)
    assert detected.divergence_since is not None and detected.details


def test_a_divergence_is_reported_when_it_appears_and_when_it_resolves_not_at_every_poll():
    drifted = position(sl=1.085)
    _, outputs = run(approved(ticket=1001), positions(drifted, t=2), positions(drifted, t=3),
                     positions(drifted, t=4), positions(position(), t=9))
    assert kinds(outputs) == [("DivergenceDetected", "sl_tp_drift"), ("DivergenceResolved", "sl_tp_drift"),
                              ("PositionMatched", None)]
    resolved = outputs[1].payload
    assert resolved.divergence_since == outputs[0].payload.divergence_since
    assert resolved.details["age_seconds"] == 7.0
    detected = outputs[0].payload
    assert (resolved.signal_id, resolved.symbol, resolved.mt5_position_id) == (
        detected.signal_id, detected.symbol, detected.mt5_position_id), "a resolution names what it resolves"
    assert resolved.signal_id is not None and resolved.volume is not None


def test_an_approved_trade_with_no_position_is_missing_after_the_fill_window():
    early, _ = run(approved(), positions(t=10))
    _, outputs = run(positions(t=31), state=early)
    assert kinds(outputs) == [("DivergenceDetected", "missing")]


def test_a_position_nobody_approved_is_unexpected_once_old_enough():
    stranger = position(ticket=2002, opened=0)
    _, young = run(positions(stranger, t=5))
    assert young == []
    _, outputs = run(positions(stranger, t=16), positions(stranger, t=17))
    assert kinds(outputs) == [("DivergenceDetected", "unexpected")]
    assert outputs[0].payload.mt5_position_id == 2002


def test_a_partial_close_seen_in_the_deals_is_a_partial_close_not_a_volume_mismatch():
    part = deal(reason=DealReason.CLIENT, volume=0.05, price=1.1002, profit_gbp=1.0)
    _, outputs = run(approved(ticket=1001), positions(position(), t=2),
                     positions(position(volume=0.05), t=3, deals=(part,)))
    assert ("DivergenceDetected", "partial_close") in kinds(outputs)


def test_a_partial_close_by_the_platform_is_expected():
    _, outputs = run(approved(ticket=1001), positions(position(), t=2), platform_closed(volume=0.05, t=3),
                     positions(position(volume=0.05), t=4))
    assert kinds(outputs) == [("PositionMatched", None)]


@pytest.mark.parametrize("description, deal_reason, price, reason, close_reason", [
    ("stop loss hit at its level", DealReason.SL, 1.09, "closed_outside_platform", "sl"),
    ("take profit hit", DealReason.TP, 1.12, "closed_outside_platform", "tp"),
    ("broker stop-out", DealReason.STOP_OUT, 1.0905, "closed_outside_platform", "stop_out"),
    ("owner closed it by hand", DealReason.CLIENT, 1.095, "closed_outside_platform", "manual"),
    ("closed from the phone", DealReason.MOBILE, 1.095, "closed_outside_platform", "manual"),
    ("stop filled 50 pips through", DealReason.SL, 1.085, "gap", "sl"),
])
def test_a_position_closed_outside_the_platform_says_how_from_the_deal_reason(
        description, deal_reason, price, reason, close_reason):
    gone = positions(t=6, deals=(deal(reason=deal_reason, price=price),))
    state, outputs = run(approved(ticket=1001), positions(position(), t=2), gone, positions(t=7))
    assert kinds(outputs)[-1] == ("DivergenceDetected", reason), description
    record = outputs[-1].payload
    assert record.close_reason.value == close_reason
    assert record.closed_price == price and record.pnl_gbp == -100.0
    assert state.expected["apr-1"].done_at is not None


def test_the_platform_acknowledging_a_close_resolves_the_closed_outside_record():
    gone = positions(t=6, deals=(deal(reason=DealReason.CLIENT, price=1.095),))
    _, outputs = run(approved(ticket=1001), positions(position(), t=2), gone, platform_closed(t=8))
    assert kinds(outputs)[-2:] == [("DivergenceDetected", "closed_outside_platform"),
                                   ("DivergenceResolved", "closed_outside_platform")]


def test_a_close_the_platform_made_is_matched_with_close_reason_platform():
    _, outputs = run(approved(ticket=1001), positions(position(), t=2), platform_closed(t=3),
                     positions(t=4, deals=(deal(reason=DealReason.EXPERT, price=1.1003),)))
    assert outputs[-1].event_type == "PositionMatched"
    assert outputs[-1].payload.close_reason == CloseReason.PLATFORM


def test_a_sync_error_makes_the_account_indeterminate_once_and_closes_nothing():
    state, outputs = run(approved(ticket=1001), positions(position(), t=2), sync_failed(t=3), sync_failed(t=4))
    assert kinds(outputs) == [("PositionMatched", None), ("ReconciliationIndeterminate", None)]
    record = outputs[-1].payload
    assert (record.matched, record.status) == (Matched.INDETERMINATE, ReconciliationStatus.FAILED)
    assert "No IPC connection" in record.error_message
    assert state.expected["apr-1"].done_at is None


def test_a_report_older_than_the_outage_changes_nothing_and_a_newer_one_ends_it():
    state, _ = run(approved(ticket=1001), positions(position(), t=2), sync_failed(t=5))
    late, outputs = run(positions(t=4), state=state)
    assert outputs == [] and late == state
    after, outputs = run(positions(position(), t=6), state=state)
    assert outputs == [] and after.indeterminate_since is None


def test_positions_the_guard_ordered_closed_are_neither_closed_outside_nor_unexpected():
    command = ClosePosition(user_id=USER, symbol="EURUSD", tickets=(1001,), reason=CloseReason.DRAWDOWN_GUARD,
                            rule="drawdown_guard/close")
    from schemas import observed
    from tests.unit.streams.builders import at

    ordered = observed(command, account_id=USER, occurred_at=at(5))
    _, outputs = run(approved(ticket=1001), positions(position(), t=2), ordered,
                     positions(t=6, deals=(deal(reason=DealReason.EXPERT, price=1.095),)))
    assert kinds(outputs) == [("PositionMatched", None)]


@pytest.mark.parametrize("ok, status, matched", [(True, "success", 1), (False, "failed", 0)])
def test_a_guard_close_result_becomes_a_close_record(ok, status, matched):
    _, outputs = run(close_result(ok=ok))
    assert [o.event_type for o in outputs] == ["PositionCloseRecorded"]
    record = outputs[0].payload
    assert (record.status.value, int(record.matched), record.close_reason) == (status, matched,
                                                                               CloseReason.DRAWDOWN_GUARD)


def test_a_guard_close_row_names_the_approved_trade_of_its_ticket():
    _, outputs = run(approved(ticket=1001), close_result(ticket=1001))
    record = outputs[-1].payload
    assert (record.signal_id, record.approval_id, record.mt5_position_id) == ("sig-apr-1", "apr-1", 1001)
    _, outputs = run(approved(ticket=1001), close_result(ticket=2002))
    assert outputs[-1].payload.signal_id is None, "a ticket no approval was bound to: no signal"


def test_a_close_result_of_no_guard_is_not_recorded_here():
    _, outputs = run(close_result(reason=CloseReason.PLATFORM))
    assert outputs == []


@pytest.mark.parametrize("description, approval, observed, report_at", [
    ("by the platform's ticket", approved(ticket=1001), position(ticket=1001, opened=900), 901),
    ("by the signal id in the comment (cut to 29 characters)", approved(signal_id="signal-" + "x" * 40),
     position(ticket=1001, comment=("signal-" + "x" * 40)[:29], opened=500), 501),
    ("by symbol, direction and time", approved(), position(ticket=1001, opened=30), 35),
])
def test_matching_rules(description, approval, observed, report_at):
    state, outputs = run(approval, positions(observed, t=report_at))
    assert state.expected["apr-1"].ticket == 1001, description


def test_symbol_time_matching_prefers_the_same_direction():
    wrong = position(ticket=1001, direction=Direction.SELL, sl=1.11, tp=1.08, opened=2)
    right = position(ticket=1002, opened=3)
    state, _ = run(approved(), positions(wrong, right, t=4))
    assert state.expected["apr-1"].ticket == 1002


def test_reprocessing_the_same_events_gives_the_same_ids():
    events = [approved(ticket=1001), positions(position(sl=1.085), t=2), sync_failed(t=3),
              positions(t=6, deals=(deal(price=1.08),))]
    first = [o.event_id for o in run(*events)[1]]
    second = [o.event_id for o in run(*events)[1]]
    assert first == second and len(set(first)) == len(first) == 4


def test_a_redelivered_report_changes_nothing():
    state, _ = run(approved(ticket=1001), positions(position(sl=1.085), t=2))
    again, outputs = run(positions(position(sl=1.085), t=2), state=state)
    assert outputs == [] and again == state


prices = st.floats(min_value=0.5, max_value=2000, allow_nan=False)
volumes = st.floats(min_value=0.01, max_value=100, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(entry=prices, volume=volumes, direction=st.sampled_from(Direction), has_stops=st.booleans(),
       jitter=st.floats(min_value=-1, max_value=1), polls=st.integers(min_value=1, max_value=5))
def test_a_matched_position_never_yields_a_divergence(entry, volume, direction, has_stops, jitter, polls):
    rules = CONFIG.symbol("EURUSD")
    below, above = entry * 0.9, entry * 1.1
    sl, tp = ((below, above) if direction is Direction.BUY else (above, below)) if has_stops else (None, None)
    trade = approved(entry=entry, volume=volume, direction=direction, sl=sl, tp=tp, ticket=1001)
    within = entry * (1 + jitter * rules.slippage_percent / 100 * 0.99)
    held = position(price_open=within, price_current=within, volume=volume, direction=direction, sl=sl, tp=tp)
    _, outputs = run(trade, *[positions(held, t=2 + i) for i in range(polls)])
    assert [o.event_type for o in outputs] == ["PositionMatched"]


def test_an_older_position_report_redelivered_after_a_newer_one_concludes_nothing():
    """Found by faultsim seed 42: a worker restored from a changelog ahead of its committed offset reads
    again the report from before the platform's close, and saw the closed position as unexpected."""
    state, _ = run(approved(), positions(position(), t=2), platform_closed(t=60), positions(t=61))
    again, outputs = run(positions(position(), t=60), positions(t=61), state=state)
    assert (again, outputs) == (state, [])
