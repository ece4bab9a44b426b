"""The drawdown guard measures trading results only: money flows, trusted readings, confirmed peaks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from infra.settings import AccountLevels, GuardSettings
from schemas import Envelope, observed
from schemas.reports import AccountReport, MoneyFlow, MoneyFlowKind
from streams.drawdown.liquidation import fire_due
from streams.drawdown.rules import handle
from streams.drawdown.state import DrawdownState
from tests.unit.streams.builders import USER, at, position, positions

CONFIG = GuardSettings(max_reading_age_seconds=None)
LEVELS = AccountLevels(warning_drawdown_percent=5, critical_drawdown_percent=10, daily_loss_limit_percent=8,
                       close_grace_seconds=10)
HELD = positions(position(1001, profit_gbp=0), t=0.5)
_tickets = iter(range(70_000_000, 80_000_000))
_polls = iter(range(1, 10_000_000))  # the poller numbers its polls of an account 1 apart


def flow(amount: float, *, t: float, kind: MoneyFlowKind = MoneyFlowKind.BALANCE, rate: float = 1.0,
         after_previous_poll: bool = False) -> MoneyFlow:
    return MoneyFlow(ticket=next(_tickets), kind=kind, amount=amount, amount_gbp=amount * rate, time=at(t),
                     server_time=at(t) + timedelta(hours=2), after_previous_poll=after_previous_poll)


def reading(equity: float, *, t: float, balance: float | None = None, credit: float = 0.0,
            profit: float | None = None, rate: float = 1.0, flows: tuple[MoneyFlow, ...] = (),
            currency: str = "GBP") -> Envelope[AccountReport]:
    """A consistent reading unless ``profit`` says otherwise: equity = balance + credit + profit."""
    balance = equity - credit if balance is None else balance
    profit = equity - balance - credit if profit is None else profit
    payload = AccountReport(user_id=USER, login=5001, server="Demo", currency=currency, poll_seq=next(_polls),
                            balance=balance, equity=equity, profit=profit, margin=100.0, margin_free=equity - 100,
                            margin_level=0.0, gbp_rate=rate, server_time=at(t) + timedelta(hours=2),
                            server_offset_minutes=120, credit=credit, positions_profit=profit, money_flows=flows)
    return observed(payload, account_id=USER, occurred_at=at(t))


def run(*events: Envelope[Any], levels: AccountLevels = LEVELS, config: GuardSettings = CONFIG,
        state: DrawdownState | None = None) -> tuple[DrawdownState, list[Envelope[Any]]]:
    state = state or DrawdownState()
    outputs: list[Envelope[Any]] = []
    for event in events:
        decision = handle(state, event, levels, config, event.occurred_at)
        state, outputs = decision.state, outputs + list(decision.outputs)
        if state.pending is not None:  # let every deadline fire, as the sweep would
            fired = fire_due(state, state.pending.deadline)
            state, outputs = fired.state, outputs + list(fired.outputs)
    return state, outputs


def alerts(outputs: list[Envelope[Any]]) -> list[str]:
    return [o.payload.alert_type.value for o in outputs if o.event_type == "GuardAlertRaised"]


def closes(outputs: list[Envelope[Any]]) -> list[Envelope[Any]]:
    return [o for o in outputs if o.event_type == "ClosePosition"]


def test_a_withdrawal_of_15_percent_with_a_position_open_and_no_loss_triggers_nothing():
    w = flow(-1_500, t=3)
    state, outputs = run(HELD, reading(10_000, t=1), reading(10_000, t=2), reading(8_500, t=3.5, flows=(w,)),
                         reading(8_500, t=4), reading(8_500, t=5))
    assert alerts(outputs) == [] and closes(outputs) == []
    assert state.peak_equity_gbp == 8_500 and state.day_start_equity_gbp == 8_500
    assert [f.ticket for f in state.flows] == [w.ticket]


def test_a_withdrawal_stamped_by_a_broker_clock_behind_ours_still_counts():
    """The terminal's clock runs 40 s behind ours (or the simulator's lagged under load): the deal's time is
    before the last reading, but the poller saw it appear after its previous read, so it is new."""
    w = flow(-1_500, t=-40, after_previous_poll=True)
    state, outputs = run(HELD, reading(10_000, t=1), reading(10_000, t=2), reading(8_500, t=3.5, flows=(w,)),
                         reading(8_500, t=4), reading(8_500, t=5))
    assert alerts(outputs) == [] and closes(outputs) == []
    assert state.peak_equity_gbp == 8_500 and [f.ticket for f in state.flows] == [w.ticket]


def test_a_look_back_flow_older_than_the_last_reading_is_already_in_it():
    """A restarted poller reports the last day's flows again; the guard, which forgot this one, had the
    account at 8 500 after it: applying it would lower the peak below the money the account holds."""
    old = flow(-1_500, t=0.2)
    state, outputs = run(HELD, reading(8_500, t=1), reading(8_500, t=2), reading(8_500, t=3, flows=(old,)),
                         reading(8_500, t=4))
    assert alerts(outputs) == [] and state.peak_equity_gbp == 8_500
    late = flow(-1_500, t=3.5)  # a look-back flow after the last reading: money left while the poller was down
    state, outputs = run(reading(7_000, t=60, flows=(late,)), reading(7_000, t=61), reading(7_000, t=62),
                         state=state)
    assert alerts(outputs) == [] and state.peak_equity_gbp == 7_000


def test_a_deposit_then_a_withdrawal_of_the_same_amount_triggers_nothing():
    state, outputs = run(HELD, reading(10_000, t=1), reading(10_000, t=2),
                         reading(15_000, t=3, flows=(flow(5_000, t=2.5),)), reading(15_000, t=4),
                         reading(10_000, t=5, flows=(flow(-5_000, t=4.5),)), reading(10_000, t=6),
                         reading(10_000, t=7))
    assert alerts(outputs) == [] and state.peak_equity_gbp == 10_000


def test_a_deposit_is_not_a_gain_and_a_later_loss_is_measured_on_the_new_money():
    """Peak 10 000, equity 9 500 (5 %), deposit 9 500: peak 20 000, equity 19 000, still 5 %."""
    state, outputs = run(HELD, reading(10_000, t=1), reading(10_000, t=2), reading(9_500, t=3),
                         reading(19_000, t=4, flows=(flow(9_500, t=3.5),)), reading(19_000, t=5))
    assert state.peak_equity_gbp == 20_000 and closes(outputs) == []
    _, more = run(reading(17_900, t=6), reading(17_900, t=7), state=state)  # 10.5 % of 20 000: a real loss
    assert "drawdown_critical" in alerts(more)


def test_credit_in_and_out_is_a_flow_not_a_result():
    _, outputs = run(HELD, reading(10_000, t=1), reading(10_000, t=2),
                     reading(13_000, t=3, credit=3_000, flows=(flow(3_000, t=2.5, kind=MoneyFlowKind.CREDIT),)),
                     reading(13_000, t=4, credit=3_000),
                     reading(10_000, t=5, flows=(flow(-3_000, t=4.5, kind=MoneyFlowKind.CREDIT),)),
                     reading(10_000, t=6), reading(10_000, t=7))
    assert alerts(outputs) == []


def test_a_redelivered_flow_is_applied_once():
    w = flow(-1_000, t=3)
    state, _ = run(HELD, reading(10_000, t=1), reading(10_000, t=2), reading(9_000, t=3.5, flows=(w,)),
                   reading(9_000, t=4, flows=(w,)))
    assert state.peak_equity_gbp == 9_000


def test_the_decision_record_shows_the_flows_it_used():
    w = flow(-1_000, t=3)
    _, outputs = run(HELD, reading(10_000, t=1), reading(10_000, t=2), reading(9_000, t=3.5, flows=(w,)),
                     reading(8_000, t=4), reading(8_000, t=5))
    warning = next(o.payload for o in outputs if o.event_type == "GuardAlertRaised")
    assert [f["ticket"] for f in warning.details["money_flows"]] == [w.ticket]
    assert warning.details["peak_equity_gbp"] == 9_000


def test_one_reading_12_percent_too_high_does_not_raise_the_peak():
    state, outputs = run(HELD, reading(10_000, t=1), reading(10_000, t=2), reading(11_200, t=3),
                         reading(10_000, t=4), reading(10_000, t=5))
    assert state.peak_equity_gbp == 10_000 and alerts(outputs) == []


def test_an_inconsistent_reading_is_untrusted_counted_and_shown():
    bad = reading(11_200, t=7, balance=10_000, profit=0.0)  # equity disagrees with balance + profit
    state, outputs = run(HELD, reading(10_000, t=1), reading(10_000, t=2), bad, reading(10_000, t=9))
    assert state.untrusted == 1 and state.peak_equity_gbp == 10_000
    shown = [o.payload.sync_error for o in outputs if o.event_type == "AccountAssessed" and o.payload.sync_error]
    assert shown and "inconsistent" in shown[0]


def test_a_bad_first_reading_of_the_day_does_not_set_the_baseline():
    day2 = 16 * 3600  # 00:00 server time (UTC+2) of the next day
    state, outputs = run(HELD, reading(10_000, t=1), reading(10_000, t=2), reading(10_600, t=day2 + 1),
                         reading(10_000, t=day2 + 2), reading(10_000, t=day2 + 3), reading(10_000, t=day2 + 4))
    assert state.day == "2026-11-03" and state.day_start_equity_gbp == 10_000
    assert "daily_loss_critical" not in alerts(outputs)


def test_a_bad_conversion_quote_does_not_double_the_peak_of_a_usd_account():
    usd = {"currency": "USD"}
    state, outputs = run(HELD, reading(10_000, t=1, rate=0.8, **usd), reading(10_000, t=2, rate=0.8, **usd),
                         reading(10_000, t=3, rate=1.6, **usd), reading(10_000, t=4, rate=0.8, **usd),
                         reading(10_000, t=5, rate=0.8, **usd))
    assert state.peak_equity_gbp == 8_000 and alerts(outputs) == [] and state.untrusted == 1


def test_a_rate_that_disagrees_with_its_inverse_pair_is_untrusted():
    bad = reading(10_000, t=3, rate=1.6).payload.model_copy(update={"gbp_rate_inverse": 0.8})
    state, _ = run(reading(10_000, t=1, rate=0.8), reading(10_000, t=2, rate=0.8),
                   observed(bad, account_id=USER, occurred_at=at(3)))
    assert state.untrusted == 1 and state.peak_equity_gbp == 10_000 * 0.8


def test_a_real_move_of_the_rate_is_trusted_once_confirmed():
    state, _ = run(reading(10_000, t=1, rate=0.8), reading(10_000, t=2, rate=0.8), reading(10_000, t=3, rate=0.9),
                   reading(10_000, t=4, rate=0.9), reading(10_000, t=5, rate=0.9))
    assert state.last.gbp_rate == 0.9


def test_a_critical_breach_needs_two_trusted_readings():
    _, one = run(HELD, reading(10_000, t=1), reading(10_000, t=2), reading(8_800, t=3), reading(10_000, t=4))
    _, two = run(HELD, reading(10_000, t=1), reading(10_000, t=2), reading(8_800, t=3), reading(8_800, t=4))
    assert closes(one) == [] and len(closes(two)) == 1


def test_a_flat_account_across_the_day_change_keeps_its_day():
    """No positions, no ticks: the server clock the poller derives still names the day."""
    times = [16 * 3600 - 2, 16 * 3600 - 1, 16 * 3600 + 1, 16 * 3600 + 2]
    state, _ = run(*[reading(10_000, t=t) for t in times])
    assert state.day == "2026-11-03" and state.day_start_equity_gbp == 10_000


def test_a_deposit_whose_report_was_lost_is_not_scaled_from_one_bad_quote():
    """Found by the property below: a quote 25 % low (consistent, inside the jump band) is the last
    trusted reading; the report carrying a deposit is lost, and the deposit comes back on the next
    report, after a 6.25 % trading loss. Neither that report's equity less the deposit (8 750) nor the
    bad quote (7 500) is the equity before it (10 000): scaled from either, the peak rose to 21 429 and
    the 6.25 % loss read as 12.5 %, a liquidation. The trusted reading before the quote bounds it."""
    deposit = flow(10_000, t=4.5)
    state, _ = run(HELD, reading(10_000, t=1), reading(10_000, t=2),
                   reading(7_500, t=3, balance=10_000))  # priced off a bad quote: consistent, 25 % low
    reading(20_000, t=5, flows=(deposit,))  # the report bringing the deposit: the guard lost its update
    state, outputs = run(reading(18_750, t=6, balance=20_000, flows=(deposit,)),
                         reading(18_750, t=7, balance=20_000, flows=(deposit,)), state=state)
    assert state.peak_equity_gbp == 20_000
    assert alerts(outputs) == ["drawdown_warning"] and closes(outputs) == []  # 6.25 %: above 5, below 10


def test_a_withdrawal_after_a_bad_quote_does_not_make_the_next_good_reading_a_jump():
    """Found by the property below: a quote 28 % low passes as trusted; a 25 % withdrawal follows. The
    last reading plus the withdrawal (4 688) made the true 7 500 look like a 60 % jump, so it was not
    trusted, and a second bad quote 25 % low was trusted against the 4 688 and read as a confirmed
    13.75 % loss. The last reading now becomes the median estimate (10 000) plus the withdrawal."""
    w = flow(-2_500, t=4.5)
    _, outputs = run(HELD, reading(10_000, t=1), reading(10_000, t=2),
                     reading(7_187.5, t=3, balance=10_000),  # priced off a bad quote, 28 % low
                     reading(7_500, t=5, flows=(w,)),
                     reading(5_625, t=6, balance=7_500, flows=(w,)))  # another bad quote, 25 % low
    assert closes(outputs) == [] and "drawdown_critical" not in alerts(outputs)


def test_a_deposit_right_after_a_real_dip_does_not_wipe_it():
    """The other side: a real 7 % dip read once, and a deposit on the very next report. Nothing came
    between them, so this report's equity less the deposit is the equity before it, and the dip is
    kept: a deposit right after a loss does not wipe it."""
    deposit = flow(9_300, t=3.5)
    state, outputs = run(HELD, reading(10_000, t=1), reading(10_000, t=2), reading(9_300, t=3),
                         reading(18_600, t=4, flows=(deposit,)), reading(18_600, t=5))
    assert state.peak_equity_gbp == 20_000 and closes(outputs) == []  # 7 % of 20 000, as before it
    state, outputs = run(reading(17_900, t=6), reading(17_900, t=7), state=state)  # 10.5 %: critical
    assert "drawdown_critical" in alerts(outputs)


# --- property: no liquidation without a confirmed trading loss beyond the critical level --------------

step = st.one_of(
    st.tuples(st.just("trade"), st.floats(min_value=-0.08, max_value=0.08)),  # a trading result, relative
    st.tuples(st.just("flow"), st.floats(min_value=-0.6, max_value=2.0)),  # a deposit or withdrawal, relative
    st.tuples(st.just("spike"), st.floats(min_value=-0.5, max_value=0.5)),  # one untrusted reading
    st.tuples(st.just("credit"), st.floats(min_value=0.0, max_value=0.5)),
    st.tuples(st.just("night"), st.just(0.0)),  # eight hours pass: the broker's day may change
    st.tuples(st.just("quote"), st.floats(min_value=-0.3, max_value=0.3)),  # one bad quote, consistent
    st.tuples(st.just("lost"), st.just(0.0)),  # the guard loses the last report's update (a restore one short)
    st.tuples(st.just("lost flow"), st.floats(min_value=-0.6, max_value=2.0)),  # a flow whose report's is lost
)


# Derandomized, so CI runs the same examples every time. Searched at random (4 × 20,000 examples) it
# finds no case since a flow on a report that does not follow the last trusted one is scaled from the
# last ``confirmations`` trusted readings too (the test above).
@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.lists(step, min_size=1, max_size=30))
def test_no_liquidation_without_a_confirmed_trading_loss_beyond_the_critical_level(steps):
    """Replays random readings, money flows, bad readings, day changes and lost updates; tracks the true
    trading return (flows taken out, time-weighted) and checks every liquidation against it. As the
    poller does, every report repeats the flows of the last minute."""
    events: list[Envelope[Any]] = [HELD]
    lost: set[int] = set()  # events whose state update the guard loses
    flows: list[MoneyFlow] = []

    def recent() -> tuple[MoneyFlow, ...]:
        return tuple(f for f in flows if f.time > at(t - 60))
    equity, credit, t = 10_000.0, 0.0, 1.0
    growth, peak_growth = 1.0, 1.0  # trading-only growth of one unit of money, and its high-water mark
    loss_after: list[float] = []  # the true drawdown (%) at each event
    kind_at: dict[int, str] = {}  # what each event is

    def last_trusted() -> str:
        """The last event the guard judged as a trusted reading (not a spike, not one whose update it lost)."""
        return next((kind_at[i] for i in range(len(events) - 1, 0, -1) if i not in lost
                     and kind_at.get(i) not in (None, "spike")), "")

    for kind, x in steps:
        t += 1
        if kind == "quote" and last_trusted() == "quote":
            continue  # two bad quotes in a row are two trusted readings agreeing: beyond any guard
        if kind == "night":  # the poller's next polls come first, each repeating the last minute's flows
            for _ in range(2):  # two: a lost update drops one report, never every repeat of a flow
                events.append(reading(equity, t=t, credit=credit, flows=recent()))
                kind_at[len(events) - 1] = kind
                loss_after.append((1 - growth / peak_growth) * 100)
                t += 1
            t += 8 * 3600
            continue
        if kind == "lost":
            lost.add(len(events) - 1)
            continue
        if kind == "trade":
            equity *= 1 + x
            growth *= 1 + x
        elif kind in ("flow", "lost flow", "credit"):
            amount = round(equity * x, 2)
            if equity + amount <= 1:
                continue
            flow_kind = MoneyFlowKind.CREDIT if kind == "credit" else MoneyFlowKind.BALANCE
            credit += amount if kind == "credit" else 0.0
            equity += amount
            flows.append(flow(amount, t=t - 0.5, kind=flow_kind))
            events.append(reading(equity, t=t, credit=credit, flows=recent()))
            kind_at[len(events) - 1] = kind
            loss_after.append((1 - growth / peak_growth) * 100)
            if kind == "lost flow":
                lost.add(len(events) - 1)
            continue
        elif kind == "quote":  # one poll priced off a bad quote: consistent, but not the account's truth
            events.append(reading(equity * (1 + x), t=t, balance=equity - credit, credit=credit, flows=recent()))
            kind_at[len(events) - 1] = kind
            loss_after.append((1 - growth / peak_growth) * 100)
            continue
        else:  # a reading whose equity disagrees with its balance: untrusted
            events.append(reading(equity * (1 + x), t=t, balance=equity - credit, credit=credit, profit=0.0,
                                  flows=recent()))
            kind_at[len(events) - 1] = "spike"
            loss_after.append((1 - growth / peak_growth) * 100)
            continue
        peak_growth = max(peak_growth, growth)
        events.append(reading(equity, t=t, credit=credit, flows=recent()))
        kind_at[len(events) - 1] = kind
        loss_after.append((1 - growth / peak_growth) * 100)
    state = DrawdownState()
    for i, event in enumerate(events):
        decision = handle(state, event, LEVELS, CONFIG, event.occurred_at)
        state = state if i in lost else decision.state  # its outputs were published all the same
        for out in decision.outputs:
            if out.event_type != "GuardAlertRaised" or out.payload.action_taken.value != "warning_sent":
                continue  # the trigger; its execution follows at the deadline whatever equity does then
            # The guard's peak and day start are confirmed levels, so at most the true peak: the loss it
            # sees is at most the true trading loss from the peak, whichever rule fired.
            kind = out.payload.alert_type.value
            limit = {"drawdown_critical": LEVELS.critical_drawdown_percent,
                     "daily_loss_critical": LEVELS.daily_loss_limit_percent}.get(kind)
            if limit is not None:
                assert loss_after[i - 1] >= limit - 1e-6, repr(steps) + repr(out.payload.details)


def test_a_repeated_flow_the_guard_lost_counts_even_on_a_broker_clock_behind_ours():
    """The report that brought a withdrawal was lost to the guard (a restore one update short); the poller
    repeats it, no longer new to it. The broker's clock runs 20 s behind ours, so the deal looks older
    than the last reading: it is still after the guard's first reading, so it is new to the guard."""
    state, _ = run(HELD, reading(10_000, t=1), reading(10_000, t=2))
    w = flow(-1_500, t=-17)  # written at t=3 by our clock
    state, outputs = run(reading(8_500, t=4, flows=(w,)), reading(8_500, t=5, flows=(w,)),
                         reading(8_500, t=6), state=state)
    assert alerts(outputs) == [] and [f.ticket for f in state.flows] == [w.ticket]
    assert state.peak_equity_gbp == 8_500


def test_a_flow_from_before_the_guards_first_reading_is_already_in_it():
    """A restarted poller reports the last day's flows; one from well before the guard's first reading
    that it never saw is in every balance it read, and must not move the peak."""
    state, _ = run(HELD, reading(8_500, t=1), reading(8_500, t=2))
    old = flow(5_000, t=-3600)
    state, outputs = run(reading(8_500, t=3, flows=(old,)), reading(8_500, t=4), state=state)
    assert state.peak_equity_gbp == 8_500 and alerts(outputs) == []


def test_a_flow_dropped_from_the_kept_ones_is_not_applied_again():
    """The state keeps the last ``FLOWS_KEPT`` flows; one dropped and reported again (a look-back) is
    older than the newest dropped one, so it is known, however recent."""
    from streams.drawdown.state import FLOWS_KEPT
    state, _ = run(HELD, reading(10_000, t=1), reading(10_000, t=2))
    many = [flow(100.0 if i % 2 == 0 else -100.0, t=3 + i / 100, after_previous_poll=True)
            for i in range(FLOWS_KEPT + 2)]
    state, _ = run(*(reading(10_000 if i % 2 else 10_100, t=3.5 + i / 10, flows=(f,)) for i, f in enumerate(many)),
                   state=state)
    assert state.flows[0].ticket == many[2].ticket and state.flows_floor == many[1].time
    peak = state.peak_equity_gbp
    again = many[0].model_copy(update={"after_previous_poll": False})
    state, _ = run(reading(10_000, t=9, flows=(again,)), reading(10_000, t=10), state=state)
    assert state.peak_equity_gbp == peak and again.ticket not in {f.ticket for f in state.flows}
