"""The worker's cheaper equivalents give the same results as what they replace."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from infra.sessions import is_open, open_throughout, session_at
from infra.settings import GuardSettings
from infra.settings.markets import MarketSettings
from schemas.common import Direction
from streams.decisions import percent_off, replace
from streams.drawdown.state import DrawdownState, Reading
from streams.drawdown.state import Held as HeldTicket
from streams.market.rules import MarketState, Quote
from streams.market.rules import handle as market_handle
from streams.reconciliation.rules import _same_or
from streams.reconciliation.rules import handle as reconcile
from streams.reconciliation.state import Held, ReconciliationState
from tests.unit.streams.builders import approved, position, positions

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
