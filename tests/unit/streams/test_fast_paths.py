"""The worker's cheaper equivalents give the same results as what they replace."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from infra.sessions import is_open, open_throughout, session_at
from infra.settings import GuardSettings
from infra.settings.markets import MarketSettings
from streams.decisions import replace
from streams.drawdown.state import DrawdownState, Held, Reading
from streams.market.rules import MarketState, Quote
from streams.reconciliation.rules import _same_or
from streams.reconciliation.state import ReconciliationState

AT = datetime(2026, 1, 5, 12, tzinfo=UTC)


def test_replace_builds_what_dataclasses_replace_builds() -> None:
    state = DrawdownState(peak_equity_gbp=100.0, streaks={"warning": 1}, positions=(Held(1, "EURUSD", 0.1, 5.0),),
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
        for step in range(0, 12 * 24 * 60, 17):
            at = start + timedelta(minutes=step)
            session = session_at(markets, symbol, at)
            assert (session is not None) == is_open(markets, symbol, at), at
            if session is None:
                continue
            for minutes in (1, 40, 180):
                earlier, later = at - timedelta(minutes=minutes), at + timedelta(minutes=minutes)
                assert (session[0] <= earlier) == open_throughout(markets, symbol, earlier, at), (at, minutes)
                assert (later < session[1]) == open_throughout(markets, symbol, at, later), (at, minutes)
