"""Market guard rules: gap, spread and stale feed close the exposed tickets, at most once per 30 s."""

from __future__ import annotations

from typing import Any

import pytest

from infra.settings import GuardSettings
from schemas import Envelope
from schemas.common import CloseReason
from streams.market.rules import MarketState, handle
from tests.unit.streams.builders import position, positions, tick

CONFIG = GuardSettings()
HELD = positions(position(1001), position(1002), position(1003, symbol="XAUUSD"), t=0)


def run(*events: Envelope[Any], state: MarketState | None = None) -> tuple[MarketState, list[Envelope[Any]]]:
    state = state or MarketState()
    outputs: list[Envelope[Any]] = []
    for event in events:
        decision = handle(state, event, CONFIG)
        state, outputs = decision.state, outputs + list(decision.outputs)
    return state, outputs


def closes(outputs: list[Envelope[Any]]) -> list[tuple[str, tuple[int, ...], CloseReason]]:
    return [(o.payload.symbol, o.payload.tickets, o.payload.reason) for o in outputs if o.event_type == "ClosePosition"]


def test_a_normal_market_closes_nothing():
    _, outputs = run(HELD, tick(bid=1.1, t=1), tick(bid=1.1003, t=2), tick(bid=1.1001, t=3))
    assert outputs == []


@pytest.mark.parametrize("description, second, reason", [
    ("a 2% gap between consecutive quotes", tick(bid=1.122, t=2), CloseReason.MARKET_GAP),
    ("a spread of 200 points", tick(bid=1.1, spread_points=200, t=2), CloseReason.SPREAD),
    ("a quote 45 s old while the market is open", tick(bid=1.1, t=46, quoted=1), CloseReason.STALE_FEED),
])
def test_each_abnormality_closes_the_symbols_tickets_with_its_reason(description, second, reason):
    _, outputs = run(HELD, tick(bid=1.1, t=1), second)
    assert closes(outputs) == [("EURUSD", (1001, 1002), reason)], description
    alert = next(o for o in outputs if o.event_type == "GuardAlertRaised")
    assert alert.payload.alert_type.value == reason.value and alert.payload.status == "ordered"
    assert alert.payload.positions_closed_count == 0, "ordered, not confirmed: the alert tracker counts closes"
    assert alert.payload.details["tickets"] == [1001, 1002]
    command = next(o.payload for o in outputs if o.event_type == "ClosePosition")
    assert command.alert_id == alert.event_id, "the close belongs to the alert"


def test_an_old_quote_while_the_market_is_closed_is_not_stale():
    _, outputs = run(HELD, tick(bid=1.1, t=500, quoted=1, market_open=False))
    assert outputs == []


def test_symbols_the_account_does_not_hold_are_ignored():
    _, outputs = run(HELD, tick("GBPUSD", bid=1.27, t=1), tick("GBPUSD", bid=1.5, t=2))
    assert outputs == []


def test_at_most_one_close_per_symbol_per_30_seconds():
    wide = [tick(bid=1.1, spread_points=200, t=t) for t in (1, 2, 10, 31, 32)]
    _, outputs = run(HELD, *wide)
    assert [o.occurred_at.second for o in outputs if o.event_type == "ClosePosition"] == [1, 31]


def test_quotes_delivered_out_of_order_are_ignored():
    _, outputs = run(HELD, tick(bid=1.1, t=2), tick(bid=1.2, t=3, quoted=1))
    assert outputs == []


def test_the_same_tick_reprocessed_gives_the_same_ids():
    events = [HELD, tick(bid=1.1, t=1), tick(bid=1.1, spread_points=200, t=2)]
    assert [o.event_id for o in run(*events)[1]] == [o.event_id for o in run(*events)[1]]


def test_quotes_alone_do_not_change_the_durable_state():
    state, _ = run(HELD)
    after, _ = run(tick(bid=1.1, t=1), tick(bid=1.1002, t=2), state=state)
    assert after == state and after.quotes != state.quotes


def test_a_symbol_without_a_spread_limit_is_never_closed_for_its_spread():
    no_limits = GuardSettings(symbols={})
    state = MarketState()
    outputs = []
    for event in (HELD, tick(bid=1.1, t=1), tick(bid=1.07506, ask=1.12506, t=2)):  # the same mid
        decision = handle(state, event, no_limits)
        state, outputs = decision.state, outputs + list(decision.outputs)
    assert no_limits.symbol("EURUSD").max_spread_points is None and outputs == []
    bid, ask = state.quotes["EURUSD"].points
    assert ask - bid == 5000
