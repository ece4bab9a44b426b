"""Drawdown guard rules: the arithmetic, the data-quality filter, the warning, and the grace timing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.settings import AccountLevels, GuardSettings
from schemas import Envelope, derived
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from streams.decisions import replace
from streams.drawdown.liquidation import fire_due, liquidation_id
from streams.drawdown.readings import day_of
from streams.drawdown.rules import handle
from streams.drawdown.state import DrawdownState
from tests.unit.streams.builders import USER, account, at, position, positions, sync_failed

CONFIG = GuardSettings(max_reading_age_seconds=None)
LEVELS = AccountLevels(warning_drawdown_percent=5, critical_drawdown_percent=10, daily_loss_limit_percent=50,
                       close_grace_seconds=10)
HELD = positions(position(1001, profit_gbp=-400), position(1002, profit_gbp=-300),
                 position(1003, symbol="XAUUSD", profit_gbp=-500), t=0.5)


def run(*events: Envelope[Any], state: DrawdownState | None = None, levels: AccountLevels = LEVELS,
        config: GuardSettings = CONFIG) -> tuple[DrawdownState, list[Envelope[Any]]]:
    state = state or DrawdownState()
    outputs: list[Envelope[Any]] = []
    for event in events:
        decision = handle(state, event, levels, config, event.occurred_at)
        state, outputs = decision.state, outputs + list(decision.outputs)
    return state, outputs


def alerts(outputs: list[Envelope[Any]]) -> list[tuple[str, str]]:
    return [(o.payload.alert_type.value, o.payload.action_taken.value) for o in outputs
            if o.event_type == "GuardAlertRaised"]


def readings(*equities: float, start: float = 1) -> list[Envelope[Any]]:
    """One reading a second from ``start``, after the first equity held for one more reading just
    before it: a peak needs two trusted readings (``confirmations``)."""
    return [account(equities[0], t=start - 0.25)] + [account(e, t=start + i) for i, e in enumerate(equities)]


def test_peak_drawdown_and_daily_loss_follow_the_good_readings():
    state, outputs = run(HELD, *readings(10_000, 10_500, 10_200))
    assert state.peak_equity_gbp == 10_200 and state.day_start_equity_gbp == 10_000  # 10 500 held once only
    snapshot = outputs[0].payload
    assert outputs[0].event_type == "AccountAssessed" and snapshot.open_positions_count == 3


def test_equity_in_another_currency_is_converted_to_gbp():
    state, outputs = run(account(10_000, t=1, balance=10_000, gbp_rate=0.8),
                         account(10_000, t=2, balance=10_000, gbp_rate=0.8))
    assert state.peak_equity_gbp == 8000 and outputs[0].payload.equity_gbp == 8000


def test_a_critical_breach_warns_at_once_then_closes_every_position_at_the_deadline():
    state, outputs = run(HELD, *readings(10_000, 8_900, 8_800))
    assert alerts(outputs) == [("drawdown_critical", "warning_sent")]
    warning = next(o.payload for o in outputs if o.event_type == "GuardAlertRaised")
    assert "positions close in 10 s" in warning.message and warning.threshold_percent == 10
    assert warning.details["confirmations"] == 2 and warning.details["peak_equity_gbp"] == 10_000
    deadline = at(3) + timedelta(seconds=10)
    assert state.pending.deadline == deadline
    assert fire_due(state, deadline - timedelta(milliseconds=1)).outputs == ()
    fired = fire_due(state, deadline)
    commands = [o.payload for o in fired.outputs if o.event_type == "ClosePosition"]
    assert [(c.symbol, c.tickets, c.reason) for c in commands] == [
        ("EURUSD", (1001, 1002), CloseReason.DRAWDOWN_GUARD), ("XAUUSD", (1003,), CloseReason.DRAWDOWN_GUARD)]
    warning_id = next(o.event_id for o in outputs if o.event_type == "GuardAlertRaised")
    assert {(c.alert_id, c.alert_tickets) for c in commands} == {(warning_id, (1001, 1002, 1003))}, \
        "every command belongs to the trigger's alert and lists all its tickets"
    assert [o for o in fired.outputs if o.event_type == "GuardAlertRaised"] == [], \
        "ordered is not done: the alert tracker reports what the executor confirms"
    assert fired.state.pending is None


def test_equity_recovering_during_the_grace_does_not_cancel_or_delay_the_close():
    state, _ = run(HELD, *readings(10_000, 8_900, 8_800))
    deadline = state.pending.deadline
    state, outputs = run(*readings(9_900, 10_100, start=4), state=state)
    assert state.pending.deadline == deadline
    assert len([o for o in fire_due(state, deadline).outputs if o.event_type == "ClosePosition"]) == 2


def test_the_close_fires_from_a_report_that_arrives_after_the_deadline():
    state, _ = run(HELD, *readings(10_000, 8_900, 8_800))
    _, outputs = run(account(8_800, t=14), state=state)
    assert [o.payload.symbol for o in outputs if o.event_type == "ClosePosition"] == ["EURUSD", "XAUUSD"]


def test_with_no_grace_the_close_is_ordered_by_the_confirming_report():
    _, outputs = run(HELD, *readings(10_000, 8_900, 8_800), levels=LEVELS.model_copy(update={"close_grace_seconds": 0}))
    assert [o.event_type for o in outputs].count("ClosePosition") == 2


def test_once_fired_the_same_positions_are_not_ordered_closed_again_while_the_executor_works():
    state, _ = run(HELD, *readings(10_000, 8_900, 8_800))
    state = fire_due(state, state.pending.deadline).state
    state, outputs = run(HELD.model_copy(update={"occurred_at": at(14)}), *readings(8_700, 8_600, start=15),
                         state=state)
    assert alerts(outputs) == []


@pytest.mark.parametrize("description, bad", [
    ("a sync error", sync_failed(t=2)),
    ("equity <= 0 while the balance is positive", account(0, t=2)),
    ("an 80% jump with no position or balance change", account(2_000, t=2)),
    ("a reading older than the last good one", account(8_000, t=0.9)),
])
def test_one_bad_reading_never_triggers(description, bad):
    _, outputs = run(HELD, account(10_000, t=1), bad, account(10_000, t=3))
    assert alerts(outputs) == [], description


def test_a_stale_reading_by_age_never_counts():
    config = GuardSettings(max_reading_age_seconds=30)
    state = DrawdownState()
    for event, now in [(account(10_000, t=1), at(1)), (account(8_000, t=2), at(100)), (account(8_000, t=3), at(101))]:
        decision = handle(state, event, LEVELS, config, now)
        state = decision.state
        assert not [o for o in decision.outputs if o.event_type == "GuardAlertRaised"]


def test_a_single_breaching_reading_needs_confirmation():
    _, outputs = run(HELD, *readings(10_000, 8_900, 10_000, 8_900, 10_000))
    assert alerts(outputs) == []


def test_bad_readings_between_two_breaching_ones_neither_count_nor_break_the_streak():
    _, outputs = run(HELD, account(10_000, t=0.75), account(10_000, t=1), account(8_900, t=2), sync_failed(t=3),
                     account(0, t=4), account(8_900, t=5))
    assert alerts(outputs) == [("drawdown_critical", "warning_sent")]


def test_a_real_crash_is_believed_once_a_second_reading_agrees():
    _, outputs = run(HELD, *readings(10_000, 4_000, 4_010, 4_020))
    assert alerts(outputs) == [("drawdown_critical", "warning_sent")]
    warning = next(o.payload for o in outputs if o.event_type == "GuardAlertRaised")
    assert warning.details["reading_at"] == at(4).isoformat()


def test_a_big_move_with_a_balance_change_is_a_deposit_not_absurd():
    state, _ = run(account(10_000, t=1), account(30_000, t=2, balance=30_000), account(30_000, t=3, balance=30_000))
    assert state.peak_equity_gbp == 30_000 and state.untrusted == 0


def test_the_warning_level_warns_once_when_crossed_and_again_after_recovery():
    _, outputs = run(HELD, *readings(10_000, 9_400, 9_400, 9_300, 9_300, 9_900, 9_400, 9_400))
    assert alerts(outputs) == [("drawdown_warning", "warning_sent")] * 2


def test_no_trigger_without_open_positions():
    _, outputs = run(*readings(10_000, 8_000, 8_000))
    assert ("drawdown_critical", "warning_sent") not in alerts(outputs)


def test_daily_loss_from_the_days_first_reading_triggers_its_own_guard():
    levels = LEVELS.model_copy(update={"daily_loss_limit_percent": 3, "critical_drawdown_percent": 50,
                                       "warning_drawdown_percent": 40})
    state, outputs = run(HELD, *readings(10_000, 9_650, 9_600), levels=levels)
    assert alerts(outputs) == [("daily_loss_critical", "warning_sent")]
    assert state.pending.reason == CloseReason.DAILY_LOSS_GUARD


def test_the_day_starts_at_broker_server_midnight_by_default():
    athens = timezone(timedelta(hours=2))
    late = account(10_000, t=0, server_time=datetime(2026, 11, 2, 23, 59, tzinfo=athens))
    early = account(10_000, t=1, server_time=datetime(2026, 11, 3, 0, 0, 30, tzinfo=athens))
    assert (day_of(late.payload, late.occurred_at, CONFIG), day_of(early.payload, early.occurred_at, CONFIG)) == (
        "2026-11-02", "2026-11-03")


def test_the_reset_time_and_zone_are_configurable_and_the_zone_applies_to_true_utc_once():
    config = GuardSettings(daily_reset_time="22:00", daily_reset_timezone="Europe/London")
    server = datetime(2026, 11, 3, 1, 0, tzinfo=timezone.utc)  # a UTC+2 broker's clock: ignored by a zone
    before = account(10_000, t=14 * 3600 - 60, server_time=server)  # 21:59 UTC = 21:59 London in November
    after = account(10_000, t=14 * 3600 + 60, server_time=server)
    assert [day_of(r.payload, r.occurred_at, config) for r in (before, after)] == ["2026-11-01", "2026-11-02"]


def test_snapshots_are_throttled_per_account():
    _, outputs = run(*[account(10_000.0, t=1 + i) for i in range(12)])
    assert [o.payload.last_sync_at for o in outputs] == [at(1), at(6), at(11)]


def test_reprocessing_gives_the_same_ids():
    events = [HELD, *readings(10_000, 8_900, 8_800)]
    first, second = run(*events), run(*events)
    assert [o.event_id for o in first[1]] == [o.event_id for o in second[1]]
    deadline = first[0].pending.deadline
    assert [o.event_id for o in fire_due(first[0], deadline).outputs] == [
        o.event_id for o in fire_due(second[0], deadline + timedelta(seconds=5)).outputs]


equity = st.floats(min_value=1, max_value=1e7, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(equity, st.just(0.0), st.just(-5.0)), min_size=1, max_size=40))
def test_drawdown_is_never_negative_and_the_peak_never_falls(values):
    state = DrawdownState()
    peak = 0.0
    for i, value in enumerate(values):
        decision = handle(state, account(value, t=i + 1, balance=max(value, 1.0)), LEVELS, CONFIG, at(i + 1))
        state = decision.state
        assert (state.peak_equity_gbp or 0.0) >= peak
        peak = state.peak_equity_gbp or 0.0
        for out in decision.outputs:
            assert getattr(out.payload, "drawdown_percent", 0) is None or out.payload.drawdown_percent >= 0


def test_a_late_worker_gives_the_full_notice_from_its_warning_and_records_both_times():
    """The worker read the breaching report 6 s late: the deadline is the grace after the warning it
    sends now, not after the report (which would leave the owner 4 s)."""
    state, _ = run(HELD, *readings(10_000, 8_900))
    late = account(8_800, t=3)
    warned_at = late.occurred_at + timedelta(seconds=6)
    decision = handle(state, late, LEVELS, CONFIG, warned_at)
    pending = decision.state.pending
    assert pending.deadline == warned_at + timedelta(seconds=10)
    (warning,) = [o for o in decision.outputs if o.event_type == "GuardAlertRaised"]
    assert warning.payload.details["warning_at"] == warned_at.isoformat()
    assert warning.payload.details["reading_at"] == late.occurred_at.isoformat()
    assert warning.payload.details["deadline"] == pending.deadline.isoformat()
    assert fire_due(decision.state, late.occurred_at + timedelta(seconds=10)).outputs == (), "not from the report"
    fired = fire_due(decision.state, pending.deadline)
    commands = [o for o in fired.outputs if o.event_type == "ClosePosition"]
    assert commands and all(c.payload.details["warning_at"] == warned_at.isoformat()
                            and c.occurred_at == pending.deadline for c in commands)


def test_a_trigger_derived_again_from_a_later_report_after_its_write_was_lost_is_the_same_liquidation():
    """A restore one update short lost the trigger's write: the next report confirms the breach again.
    It is the account's same liquidation (same alert id: downstream keeps the first warning), not a
    second one whose first warning is never executed; the next liquidation is another one."""
    before, _ = run(HELD, *readings(10_000, 8_900))
    first_state, first = run(account(8_800, t=3), state=before)
    again_state, again = run(account(8_700, t=4), state=before)  # the write of the report at 3 s lost
    warnings = [[o for o in outputs if o.event_type == "GuardAlertRaised"] for outputs in (first, again)]
    warning_ids = [[o.event_id for o in published] for published in warnings]
    assert warning_ids[0] == warning_ids[1] and len(warning_ids[0]) == 1
    assert warnings[0][0].causation_id != warnings[1][0].causation_id, "each names the report that confirmed it"
    fired = [o.payload for o in fire_due(again_state, again_state.pending.deadline).outputs]
    assert {c.alert_id for c in fired} == set(warning_ids[0]), "its closes belong to the warning the owner got"
    assert first_state.liquidations == again_state.liquidations == 1
    reopened = replace(fire_due(first_state, first_state.pending.deadline).state, ordered={})
    _, next_one = run(account(8_700, t=30), account(8_700, t=31), state=reopened)
    next_ids = [o.event_id for o in next_one if o.event_type == "GuardAlertRaised"]
    assert len(next_ids) == 1 and next_ids != warning_ids[0], "the account's next liquidation is another one"


def test_a_liquidations_own_command_read_back_after_a_restart_means_it_fired_already():
    """The restored state still held the trigger (its fire was after the committed offset); the consumer
    reads the liquidation's close commands again: they are on the log, so the deadline fires nothing more."""
    state, _ = run(HELD, *readings(10_000, 8_900, 8_800))
    deadline = state.pending.deadline
    orders = [o for o in fire_due(state, deadline).outputs if o.event_type == "ClosePosition"]
    read_back, _ = run(orders[0], state=state)
    assert read_back.pending is None and set(read_back.ordered) == {1001, 1002, 1003}
    assert fire_due(read_back, deadline).outputs == ()
    other = derived(ClosePosition(user_id=USER, symbol="XAUUSD", tickets=(1003,), reason=CloseReason.SPREAD,
                                  rule="spread/close"), cause=HELD, rule="spread/close/XAUUSD")
    assert run(other, state=state)[0].pending == state.pending, "another guard's close leaves the trigger pending"


def test_liquidations_read_back_from_the_log_are_counted_so_the_next_one_has_a_new_id():
    """The drawdown state was lost (the embedded broker's changelog is in memory) and the log replayed:
    the old reports are too old to trigger, but the old liquidation's commands are read back and counted,
    once per liquidation, so the next liquidation is not given the id of one already on the log."""
    state, _ = run(HELD, *readings(10_000, 8_900, 8_800))
    orders = [o for o in fire_due(state, state.pending.deadline).outputs if o.event_type == "ClosePosition"]
    assert len(orders) >= 2, "one command per symbol, all of the same liquidation"
    replayed, _ = run(*orders, state=DrawdownState())
    assert replayed.liquidations == 1 and replayed.pending is None
    assert liquidation_id(USER, replayed.liquidations) != orders[0].payload.alert_id
