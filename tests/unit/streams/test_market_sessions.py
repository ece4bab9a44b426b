"""The market guard knows when markets trade: sessions, breaks, holidays, suffixes, prices in points."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.sessions import is_open
from infra.settings import GuardSettings
from schemas import Envelope
from schemas.common import CloseReason
from streams.market.rules import MarketState, handle
from tests.unit.streams.builders import position, positions, tick

CONFIG = GuardSettings()
MARKETS = CONFIG.markets
FRIDAY_LATE = datetime(2026, 11, 6, 21, 59, 30, tzinfo=UTC)  # 16:59:30 New York: the last FX minute
WINTER_BREAK = datetime(2026, 12, 2, 22, 0, tzinfo=UTC)  # 17:00 New York in winter: metals and indices pause
SUMMER_BREAK = datetime(2026, 7, 1, 21, 0, tzinfo=UTC)  # 17:00 New York in summer
CHRISTMAS = datetime(2026, 12, 25, 10, 0, tzinfo=UTC)
MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def held(*symbols: str, origin: datetime) -> Envelope[Any]:
    return positions(*(position(1001 + i, symbol=s) for i, s in enumerate(symbols)), t=-1,
                     ).model_copy(update={"occurred_at": origin - timedelta(seconds=1)})


def run(*events: Envelope[Any], config: GuardSettings = CONFIG) -> list[Envelope[Any]]:
    state, outputs = MarketState(), []
    for event in events:
        decision = handle(state, event, config)
        state, outputs = decision.state, outputs + list(decision.outputs)
    return outputs


def closes(outputs: list[Envelope[Any]]) -> list[tuple[str, CloseReason, str]]:
    return [(o.payload.symbol, o.payload.reason, o.payload.rule) for o in outputs if o.event_type == "ClosePosition"]


def test_over_a_weekend_polls_every_30_s_close_nothing():
    """Friday's last quote is reported all weekend long; the feed is not stale: the market is shut."""
    polls = [tick(bid=1.1, t=t, quoted=0, origin=FRIDAY_LATE) for t in range(30, 2 * 86400 + 1, 30)]
    assert polls[-1].occurred_at == datetime(2026, 11, 8, 21, 59, 30, tzinfo=UTC)  # Sunday, 16:59:30 New York
    assert run(held("EURUSD", origin=FRIDAY_LATE), *polls) == []
    open_31_s = tick(bid=1.1, t=2 * 86400 + 61, quoted=0, origin=FRIDAY_LATE)  # Sunday 22:00:31 UTC
    assert closes(run(held("EURUSD", origin=FRIDAY_LATE), *polls, open_31_s))[0][1] is CloseReason.STALE_FEED


def test_the_same_old_quote_is_stale_on_a_weekday():
    """Stale by both clocks: its own time, and how long the guard has seen it unchanged (from t=30)."""
    polls = [tick(bid=1.1, t=t, quoted=0, origin=MONDAY) for t in (30, 60, 61)]
    assert run(held("EURUSD", origin=MONDAY), *polls[:2]) == []
    assert closes(run(held("EURUSD", origin=MONDAY), *polls)) == [
        ("EURUSD", CloseReason.STALE_FEED, "market_guard/stale_feed")]


@pytest.mark.parametrize("description, origin", [
    ("winter: the break is 22:00-23:00 UTC", WINTER_BREAK), ("summer: 21:00-22:00 UTC", SUMMER_BREAK)])
def test_a_daily_break_stops_metals_and_indices_but_not_fx(description, origin):
    last = origin - timedelta(seconds=1)
    polls = [tick(s, bid=b, point=p, t=t, quoted=-1, origin=origin) for t in range(30, 3600, 30)
             for s, b, p in (("XAUUSD", 2030.0, 0.01), ("US30", 37500.0, 0.01))]
    assert run(held("XAUUSD", "US30", origin=last), *polls) == [], description
    fx = [tick(bid=1.1, t=t, quoted=-1, origin=origin) for t in (0, 31)]
    assert closes(run(held("EURUSD", origin=last), *fx))[0][1] is CloseReason.STALE_FEED


def test_after_a_break_a_quote_is_stale_only_once_the_market_has_been_open_that_long():
    reopen = WINTER_BREAK + timedelta(hours=1)
    in_break, before, after = (tick("XAUUSD", bid=2030.0, point=0.01, t=t, quoted=-3600, origin=reopen)
                               for t in (-1, 20, 31))  # the break's last quote, seen through the break
    assert run(held("XAUUSD", origin=reopen), in_break, before) == []
    assert closes(run(held("XAUUSD", origin=reopen), in_break, before, after))[0][1] is CloseReason.STALE_FEED


def test_a_quote_is_stale_only_once_the_guard_has_seen_it_that_long():
    """A quote that looks an hour old at first sight (a broker clock not learned yet, read by an assumed
    rule that is hours off) is not stale: the guard must see it unchanged for the limit itself."""
    first, later = (tick(bid=1.1, t=t, quoted=-3600, origin=MONDAY) for t in (0, 30))
    assert run(held("EURUSD", origin=MONDAY), first, later) == []
    moved = tick(bid=1.1002, t=31, quoted=31, origin=MONDAY)
    assert run(held("EURUSD", origin=MONDAY), first, later, moved) == []
    frozen = tick(bid=1.1, t=31, quoted=-3600, origin=MONDAY)
    assert closes(run(held("EURUSD", origin=MONDAY), first, later, frozen))[0][1] is CloseReason.STALE_FEED


def test_a_holiday_is_closed():
    polls = [tick(bid=1.1, t=t, quoted=-7200, origin=CHRISTMAS) for t in range(0, 600, 30)]
    assert not is_open(MARKETS, "EURUSD", CHRISTMAS)
    assert run(held("EURUSD", origin=CHRISTMAS), *polls) == []


def test_a_symbol_traded_again_after_three_days_is_not_a_gap():
    first = tick(bid=1.1, t=0, origin=MONDAY)
    later = tick(bid=1.14, t=3 * 86400, origin=MONDAY)  # 3.6 % away, three days on
    assert run(held("EURUSD", origin=MONDAY), first, later) == []


def test_a_gap_across_the_weekend_is_its_own_rule_off_by_default():
    friday = tick(bid=1.1, t=0, origin=FRIDAY_LATE)
    sunday = tick(bid=1.13, t=2 * 86400 + 3600, origin=FRIDAY_LATE)  # Sunday 23:00 UTC, open again
    events = (held("EURUSD", origin=FRIDAY_LATE), friday, sunday)
    assert run(*events) == []
    on = GuardSettings(symbols={"EURUSD": {"session_gap_percent": 2.0}})
    assert closes(run(*events, config=on)) == [("EURUSD", CloseReason.MARKET_GAP, "market_guard/session_gap")]


@pytest.mark.parametrize("description, broker_symbol, base", [
    ("a .r suffix", "EURUSD.r", "EURUSD"), ("a # suffix", "XAUUSD#", "XAUUSD"),
    ("a .cash suffix", "US30.cash", "US30"), ("no suffix", "GBPUSD", "GBPUSD")])
def test_suffixed_symbols_take_their_base_symbols_rules_and_sessions(description, broker_symbol, base):
    assert MARKETS.base_symbol(broker_symbol) == base, description
    assert CONFIG.symbol(broker_symbol) == CONFIG.symbol(base)
    assert MARKETS.hours(broker_symbol) == MARKETS.hours(base)


def test_a_suffixed_symbol_keeps_its_spread_limit_and_its_break():
    limit = int(CONFIG.symbol("XAUUSD").max_spread_points)
    ok = tick("XAUUSD#", bid=2030.0, point=0.01, digits=2, spread_points=limit, t=1, origin=MONDAY)
    wide = tick("XAUUSD#", bid=2030.0, point=0.01, digits=2, spread_points=limit + 1, t=1, origin=MONDAY)
    assert run(held("XAUUSD#", origin=MONDAY), ok) == []
    assert closes(run(held("XAUUSD#", origin=MONDAY), wide))[0][:2] == ("XAUUSD#", CloseReason.SPREAD)
    in_break = tick("XAUUSD#", bid=2030.0, point=0.01, digits=2, spread_points=limit * 5, t=600,
                    origin=WINTER_BREAK)
    assert run(held("XAUUSD#", origin=WINTER_BREAK), in_break) == []


def test_a_spread_exactly_at_its_limit_is_within_it_at_every_price():
    """As floats, ask - bid of a 60-point spread is over 60 points for about 30 % of prices."""
    rng = random.Random(7)
    bids = [round(rng.uniform(0.5, 2.0), 5) for _ in range(500)]
    float_over = sum((round(b + 60 * 0.00001, 5) - b) / 0.00001 > 60 for b in bids)
    assert float_over > 50  # the failure this rule avoids is real
    for i, bid in enumerate(bids):
        at_limit = tick(bid=bid, ask=round(bid + 60 * 0.00001, 5), digits=5, t=1, origin=MONDAY)
        assert run(held("EURUSD", origin=MONDAY), at_limit) == [], bid


def test_a_gap_exactly_at_its_limit_is_within_it():
    first = tick(bid=1.0, spread_points=0, t=1, digits=5, origin=MONDAY)
    at_limit = tick(bid=1.01, spread_points=0, t=2, digits=5, origin=MONDAY)  # exactly 1 %
    beyond = tick(bid=1.01001, spread_points=0, t=2, digits=5, origin=MONDAY)
    assert run(held("EURUSD", origin=MONDAY), first, at_limit) == []
    assert closes(run(held("EURUSD", origin=MONDAY), first, beyond))[0][1] is CloseReason.MARKET_GAP


# --- property: no market-guard close while the market is closed ------------------------------------

START = datetime(2026, 12, 18, 12, 0, tzinfo=UTC)  # a Friday before the Christmas holiday and a weekend

quote_steps = st.lists(st.tuples(
    st.sampled_from(["EURUSD", "XAUUSD#", "US30.cash"]),
    st.integers(min_value=1, max_value=4 * 3600),  # seconds to the next poll
    st.integers(min_value=0, max_value=3600),  # how old the quote is at the poll
    st.floats(min_value=-0.05, max_value=0.05),  # relative move of the price
    st.integers(min_value=1, max_value=3000),  # spread in points
), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(quote_steps)
def test_no_market_guard_close_while_the_market_is_closed(steps):
    symbols = {"EURUSD": (1.1, 0.00001, 5), "XAUUSD#": (2030.0, 0.01, 2), "US30.cash": (37500.0, 0.01, 2)}
    prices = {s: p for s, (p, _, _) in symbols.items()}
    events: list[Envelope[Any]] = [held(*symbols, origin=START)]
    t = 0
    for symbol, wait, age, move, spread in steps:
        t += wait
        prices[symbol] = round(prices[symbol] * (1 + move), symbols[symbol][2])
        _, point, digits = symbols[symbol]
        events.append(tick(symbol, bid=prices[symbol], point=point, digits=digits, spread_points=spread, t=t,
                           quoted=t - age, origin=START))
    for command in (o for o in run(*events) if o.event_type == "ClosePosition"):
        assert is_open(MARKETS, command.payload.symbol, command.occurred_at), command.payload.details
