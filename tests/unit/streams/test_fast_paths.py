"""The worker's cheaper equivalents give the same results as what they replace."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from infra.sessions import is_open, open_throughout, session_at
from infra.settings import GuardSettings
from infra.settings.markets import MarketSettings
from schemas import Envelope, observed
from schemas.commands import ClosePosition
from schemas.common import CloseReason, DealReason, Direction
from streams.decisions import percent_off, replace
from streams.drawdown.state import DrawdownState, Reading
from streams.drawdown.state import Held as HeldTicket
from streams.market.rules import MarketState, Quote
from streams.market.rules import handle as market_handle
from streams.reconciliation import rules as reconciliation
from streams.reconciliation.rules import _same_or
from streams.reconciliation.rules import handle as reconcile
from streams.reconciliation.state import Held, ReconciliationState
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
from tests.unit.streams.builders import at as seconds_in

AT = datetime(2026, 1, 5, 12, tzinfo=UTC)


def test_replace_builds_what_dataclasses_replace_builds() -> None:
    state = DrawdownState(peak_equity_gbp=100.0, streaks={"warning": 1}, positions=(HeldTicket(1, "EURUSD", 0.1, 5.0),),
                          last=Reading(AT, 95.0, 100.0, (1,)))
    changes = {"peak_equity_gbp": 120.0, "warning_active": True, "last_snapshot_at": AT}
    fast, slow = replace(state, **changes), dataclasses.replace(state, **changes)
    assert fast == slow and fast.__dict__ == slow.__dict__ and type(fast) is DrawdownState
    assert state.peak_equity_gbp == 100.0  # the original is untouched
    market = MarketState(held={"EURUSD": (1,)})
    quoted = replace(market, quotes={"EURUSD": Quote(1.0, 1.1, AT)})
    assert quoted == dataclasses.replace(market, quotes={"EURUSD": Quote(1.0, 1.1, AT)})
    assert quoted.quotes["EURUSD"].mid == 1.05 and market.quotes == {}


def test_same_or_keeps_the_old_mapping_only_when_equal() -> None:
    before = {1: Quote(1.0, 1.1, AT), 2: Quote(2.0, 2.1, AT)}
    assert _same_or(before, dict(before)) is before
    assert _same_or(before, {1: Quote(1.0, 1.1, AT), 2: Quote(2.0, 2.1, AT)}) is before  # equal, not identical
    changed = {1: Quote(1.0, 1.1, AT), 2: Quote(2.0, 2.2, AT)}
    assert _same_or(before, changed) is changed
    fewer = {1: before[1]}
    assert _same_or(before, fewer) is fewer
    other_key = {1: before[1], 3: before[2]}
    assert _same_or(before, other_key) is other_key
    assert ReconciliationState().held == {}


def test_symbol_rules_are_merged_once_and_follow_the_config() -> None:
    config = GuardSettings()
    gold = config.symbol("XAUUSD")
    assert gold is config.symbol("XAUUSD")
    assert gold.quote_gap_percent == 1.5 and gold.max_spread_points == 125
    assert config.symbol("NOPE") is config.default_symbol
    plain = config.model_copy(update={"symbols": {}})
    assert plain.symbol("XAUUSD") is plain.default_symbol
    custom = GuardSettings(symbols={"XAUUSD": {"max_spread_points": 90}})
    assert custom.symbol("XAUUSD").max_spread_points == 90 and custom.symbol("XAUUSD").quote_gap_percent == 1.0


@pytest.mark.parametrize("symbol", ["EURUSD", "XAUUSD#", "US30.cash", "BTCUSD"])
def test_one_session_lookup_answers_what_is_open_and_open_throughout_answer(symbol: str) -> None:
    """The market guard asks ``session_at`` once per quote and compares times with it: across weekends,
    daily breaks, a holiday and both DST changes, that gives what ``is_open``/``open_throughout`` give."""
    markets = MarketSettings()
    for start in (datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 10, 23, tzinfo=UTC),
                  datetime(2026, 12, 22, tzinfo=UTC)):
        times = [start + timedelta(minutes=step) for step in range(0, 12 * 24 * 60, 17)]
        for at in times + times[::-1]:  # forwards, as quotes come, and backwards (the remembered session misses)
            session = session_at(markets, symbol, at)
            assert (session is not None) == is_open(markets, symbol, at), at
            if session is None:
                continue
            for minutes in (1, 40, 180):
                earlier, later = at - timedelta(minutes=minutes), at + timedelta(minutes=minutes)
                assert (session[0] <= earlier) == open_throughout(markets, symbol, earlier, at), (at, minutes)
                assert (later < session[1]) == open_throughout(markets, symbol, at, later), (at, minutes)


def test_a_held_position_is_the_same_as_its_report_exactly_when_held_of_it_is_equal() -> None:
    """``Held.same_as`` stands in for ``Held.of(p) == held``: every field of Held must count in it."""
    p = position(1001, comment="sig-1")
    held = Held.of(p)
    assert held.same_as(p) and held.same_as(p.model_copy(update={"price_current": 1.2, "profit_gbp": -3.0}))
    other = {"ticket": 1002, "symbol": "GBPUSD", "direction": Direction.SELL, "volume": 0.2, "price_open": 1.3,
             "sl": None, "tp": 1.5, "comment": "x", "opened_at": AT}
    assert {f.name for f in dataclasses.fields(Held)} == set(other), "a new field of Held needs a line here"
    for name, value in other.items():
        changed = p.model_copy(update={name: value})
        assert not held.same_as(changed) and Held.of(changed) != held, name


def test_an_unchanged_report_keeps_the_reconciliation_state_as_it_was() -> None:
    """Most reports change nothing: the state (its mappings too) stays the same object, no table write."""
    config = GuardSettings()
    state = reconcile(ReconciliationState(), approved("apr-1", t=0, ticket=1001), config).state
    first = reconcile(state, positions(position(1001, price_open=1.1), t=2), config)
    again = reconcile(first.state, positions(position(1001, price_open=1.1, price_current=1.2), t=3), config)
    assert again.state is first.state and again.outputs == ()
    moved = reconcile(first.state, positions(position(1001, price_open=1.1, sl=1.05), t=4), config)
    assert moved.state.held[1001].sl == 1.05 and moved.state.expected is first.state.expected


@given(st.floats(allow_nan=False, allow_infinity=False), st.floats(allow_nan=False, allow_infinity=False))
def test_percent_off_is_bit_for_bit_the_two_abs_formula(value: float, reference: float) -> None:
    slow = abs(value - reference) / abs(reference) * 100 if reference else 0.0
    assert percent_off(value, reference) == slow or math.isnan(slow) and math.isnan(percent_off(value, reference))


def _held_built(report: list[tuple[str, int]]) -> dict[str, tuple[int, ...]]:
    """The market guard's held tickets per symbol, built the long way (what the quick question stands in for)."""
    held: dict[str, list[int]] = {}
    for symbol, ticket in report:
        held.setdefault(symbol, []).append(ticket)
    return {s: tuple(sorted(t)) for s, t in sorted(held.items())}


_PAIRS = st.lists(st.tuples(st.sampled_from(["EURUSD", "GBPUSD", "XAUUSD"]), st.integers(1, 4)), max_size=4)


@given(_PAIRS, _PAIRS)
@example([("EURUSD", 1), ("GBPUSD", 2)], [("EURUSD", 1), ("EURUSD", 1)])  # as many, all held, one symbol short
@example([("EURUSD", 1)], [("EURUSD", 1)])
def test_the_market_guard_keeps_its_held_tickets_exactly_when_a_report_would_build_them_again(
        before: list[tuple[str, int]], report: list[tuple[str, int]]) -> None:
    """Duplicate symbols and tickets included (no terminal reports those, but the answer must not depend on it)."""
    state = MarketState(held=_held_built(before))
    event = positions(*(position(ticket, symbol=symbol) for symbol, ticket in report), t=5)
    after = market_handle(state, event, GuardSettings()).state
    assert after.held == _held_built(report) and after.positions_at == event.occurred_at
    assert (after.held is state.held) == (_held_built(report) == state.held)


_TICKETS = st.sampled_from([1001, 1002, 1003])
_HELD = st.builds(lambda ticket, symbol, volume, sl, comment, opened: (ticket, symbol, volume, sl, comment, opened),
                  _TICKETS, st.sampled_from(["EURUSD", "GBPUSD"]), st.sampled_from([0.1, 0.2]),
                  st.sampled_from([None, 1.09]), st.sampled_from(["", "sig-a1", "sig-a2"]), st.sampled_from([0, 5, 30]))
_EVENTS = st.lists(st.tuples(st.sampled_from([1, 10, 20, 40, 200]), st.one_of(
    st.tuples(st.just("approve"), st.sampled_from(["a1", "a2", "a3"]), st.sampled_from(["EURUSD", "GBPUSD"]),
              st.sampled_from([0.1, 0.2]), st.sampled_from([None, 1001, 1002])),
    st.tuples(st.just("report"), st.lists(_HELD, max_size=3), st.lists(st.tuples(_TICKETS, st.booleans()), max_size=2)),
    st.tuples(st.just("again")), st.tuples(st.just("again")), st.tuples(st.just("again")),
    st.tuples(st.just("platform_close"), st.sampled_from(["a1", "a2", "a3"]), st.sampled_from([None, 0.1])),
    st.tuples(st.just("command"), _TICKETS), st.tuples(st.just("result"), st.booleans(), _TICKETS),
    st.tuples(st.just("sync_failed")))), max_size=14)


def _event(step: tuple[Any, ...], t: float, last: list[Any]) -> Envelope[Any]:
    """One drawn input at ``t``; a report ("again": the last one's positions, as most polls see them)."""
    kind = step[0]
    if kind == "approve":
        _, approval_id, symbol, volume, ticket = step
        return approved(approval_id, t=t, symbol=symbol, volume=volume, sl=None, tp=None, ticket=ticket)
    if kind in ("report", "again"):
        if kind == "report":
            last[:] = [position(ticket, symbol=symbol, volume=volume, sl=sl, tp=None, comment=comment, opened=opened)
                       for ticket, symbol, volume, sl, comment, opened in step[1]]
            deals = tuple(deal(ticket, t=t, reason=DealReason.SL if sl else DealReason.CLIENT) for ticket, sl in step[2])
            return positions(*last, t=t, deals=deals)
        return positions(*last, t=t)
    if kind == "platform_close":
        return platform_closed(step[1], t=t, volume=step[2])
    if kind == "command":
        command = ClosePosition(user_id=USER, symbol="EURUSD", tickets=(step[1],), reason=CloseReason.DRAWDOWN_GUARD,
                                rule="drawdown_guard/close")
        return observed(command, account_id=USER, occurred_at=seconds_in(t))
    if kind == "result":
        return close_result(ok=step[1], ticket=step[2], t=t)
    return sync_failed(t=t)


def _said(outputs: tuple[Envelope[Any], ...]) -> list[tuple[Any, ...]]:
    """What a decision published (not ``recorded_at``: the wall clock)."""
    return [(o.event_id, o.event_type, o.payload) for o in outputs]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_EVENTS)
@example([(1, ("approve", "a1", "EURUSD", 0.2, None)), (1, ("report", [(1001, "EURUSD", 0.2, None, "sig-a1", 0)], [])),
          (1, ("platform_close", "a1", 0.1)), (1, ("again",)), (40, ("again",))])  # a platform close, timed
@example([(1, ("report", [(1001, "EURUSD", 0.1, None, "", 0)], [])), (1, ("approve", "a1", "EURUSD", 0.1, 1001)),
          (1, ("again",))])  # a trade bound to a held position by its ticket: matched at the next report
@example([(1, ("approve", "a1", "EURUSD", 0.1, None)), (1, ("report", [(1001, "EURUSD", 0.1, None, "sig-a1", 0)], [])),
          (1, ("report", [], [(1001, False)])), (1, ("again",)), (200, ("again",))])  # a finished trade forgotten
@example([(1, ("approve", "a1", "EURUSD", 0.2, None)), (1, ("report", [(1001, "EURUSD", 0.2, None, "sig-a1", 0)], [])),
          (1, ("report", [(1001, "EURUSD", 0.2, None, "sig-a1", 0)], [(1001, False)]))])  # a deal, the same positions
def test_a_quiet_position_report_concludes_what_the_long_way_concludes(steps: list[tuple[int, tuple[Any, ...]]]
                                                                       ) -> None:
    """Reconciliation's quiet report (``_quiet``): after any history of approvals, reports (most of them
    the same positions again), deals, platform closes, guard closes and outages, a report gives the same
    state and records as the long way, and keeps the state itself exactly when the long way does."""
    config, state, t, last = GuardSettings(closed_trade_retention_seconds=120), ReconciliationState(), 0.0, []
    for step, drawn in steps:
        t += step
        event = _event(drawn, t, last)
        quick = reconcile(state, event, config)
        if drawn[0] in ("report", "again"):
            with mock.patch.object(reconciliation, "_quiet", return_value=False):
                slow = reconcile(state, event, config)
            assert quick.state == slow.state and _said(quick.outputs) == _said(slow.outputs)
            assert (quick.state is state) == (slow.state is state)
        state = quick.state


def test_a_report_of_the_positions_held_and_matched_takes_the_quiet_way() -> None:
    """The property above holds whether or not the quiet way is taken: here it is taken, again and again
    (the compared trades kept on the held positions), and left once a trade changes."""
    config = GuardSettings()
    state = reconcile(ReconciliationState(), approved("a1", t=0, sl=None, tp=None), config).state
    report = [position(1001, sl=None, tp=None, comment="sig-a1")]
    state = reconcile(state, positions(*report, t=2), config).state
    for t in (3, 4, 5):
        assert reconciliation._quiet(state, {1001: report[0]}, seconds_in(t), config)
    closed = reconcile(state, platform_closed("a1", t=6), config).state
    assert not reconciliation._quiet(closed, {1001: report[0]}, seconds_in(7), config)
    lenient = GuardSettings(default_symbol={"slippage_percent": 20})
    slipped = [position(1001, price_open=1.2, sl=None, tp=None, comment="sig-a1")]  # 9% off the approval
    state = reconcile(state, positions(*slipped, t=8), config).state
    assert state.divergences and reconciliation._quiet(state, {1001: slipped[0]}, seconds_in(9), config)
    assert not reconciliation._quiet(state, {1001: slipped[0]}, seconds_in(9), lenient)  # it would be resolved
    assert not reconciliation._quiet(replace(state, divergences={}), {1001: slipped[0]}, seconds_in(9), config)
