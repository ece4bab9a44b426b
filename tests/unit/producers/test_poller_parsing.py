"""The poller's pure parsing: terminal results in, report payloads out."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from producers.mt5 import constants as c
from producers.mt5.types import Tick, TradeDeal, TradePosition
from producers.poller.parsing import (
    DEAL_WAIT_POLLS,
    Leg,
    PollState,
    conclude_poll,
    conversion_route,
    observed_deal,
    route_rate,
    tickets_to_explain,
)
from schemas.common import DealEntry, DealReason, Direction

T0 = 1_704_700_800


def position(ticket: int, *, symbol: str = "EURUSD", type: int = c.POSITION_TYPE_BUY, volume: float = 1.0,
             profit: float = 10.0, sl: float = 0.0, tp: float = 0.0) -> TradePosition:
    return TradePosition(ticket, T0, T0 * 1000, T0, T0 * 1000, type, 7, ticket, 0, volume, 1.1, sl, tp, 1.2, 0.0,
                         profit, symbol, "sig-1", "")


def deal(ticket: int, position_id: int, *, entry: int = c.DEAL_ENTRY_OUT, reason: int = c.DEAL_REASON_SL,
         type: int = c.DEAL_TYPE_SELL, volume: float = 1.0, profit: float = -5.0) -> TradeDeal:
    return TradeDeal(ticket, ticket, T0 + 5, (T0 + 5) * 1000, type, entry, 0, position_id, reason, volume, 1.09,
                     0.0, 0.0, profit, 0.0, "EURUSD", "", "")


def tick(bid: float, ask: float, t: int = T0) -> Tick:
    return Tick(t, bid, ask, 0.0, 0, t * 1000, 6, 0.0)


KNOWN = {"EURUSD", "GBPUSD", "EURGBP", "USDJPY"}


@pytest.mark.parametrize(("currency", "route"), [
    pytest.param("GBP", (), id="GBP account needs no conversion"),
    pytest.param("USD", (Leg("GBPUSD", inverted=True),), id="USD account divides by GBPUSD ask"),
    pytest.param("EUR", (Leg("EURGBP", inverted=False),), id="EUR account multiplies by EURGBP bid"),
    pytest.param("JPY", (Leg("USDJPY", inverted=True), Leg("GBPUSD", inverted=True)), id="JPY crosses USD"),
    pytest.param("CHF", None, id="no symbol converts CHF"),
])
def test_conversion_route(currency: str, route: tuple[Leg, ...] | None) -> None:
    assert conversion_route(currency, KNOWN.__contains__) == route


def test_route_rate_uses_bid_for_direct_and_ask_for_inverse() -> None:
    quotes = {"USDJPY": tick(149.0, 150.0), "GBPUSD": tick(1.24, 1.25)}
    rate = route_rate((Leg("USDJPY", True), Leg("GBPUSD", True)), quotes)
    assert rate == pytest.approx(1 / 150.0 / 1.25)
    assert route_rate((Leg("EURGBP", False),), quotes) is None  # no quote: no rate, never a guess


@pytest.mark.parametrize(("reason", "expected"), [
    pytest.param(c.DEAL_REASON_SL, DealReason.SL, id="stop loss"),
    pytest.param(c.DEAL_REASON_TP, DealReason.TP, id="take profit"),
    pytest.param(c.DEAL_REASON_SO, DealReason.STOP_OUT, id="stop-out"),
    pytest.param(c.DEAL_REASON_CLIENT, DealReason.CLIENT, id="manual from the desktop"),
    pytest.param(c.DEAL_REASON_MOBILE, DealReason.MOBILE, id="manual from the phone"),
    pytest.param(c.DEAL_REASON_EXPERT, DealReason.EXPERT, id="an expert (the executor)"),
])
def test_closing_deal_keeps_the_reason(reason: int, expected: DealReason) -> None:
    observed = observed_deal(deal(50, 5, reason=reason, profit=-8.0), gbp_rate=0.5)
    assert observed is not None
    assert (observed.reason, observed.entry, observed.direction) == (expected, DealEntry.OUT, Direction.SELL)
    assert (observed.profit, observed.profit_gbp, observed.position_id) == (-8.0, -4.0, 5)


@pytest.mark.parametrize("d", [
    pytest.param(deal(50, 5, entry=c.DEAL_ENTRY_IN), id="opening deal"),
    pytest.param(deal(50, 0, type=c.DEAL_TYPE_BALANCE), id="balance operation"),
])
def test_non_closing_deals_are_not_reported(d: TradeDeal) -> None:
    assert observed_deal(d, gbp_rate=1.0) is None


@pytest.mark.parametrize(("previous", "now", "pending", "expected"), [
    pytest.param(None, [position(1)], (), [], id="first poll: nothing to compare with"),
    pytest.param({1: 1.0, 2: 1.0}, [position(1)], (), [2], id="vanished ticket"),
    pytest.param({1: 1.0}, [position(1, volume=0.4)], (), [1], id="shrunk ticket (partial close)"),
    pytest.param({1: 1.0}, [position(1), position(3)], (), [], id="a new ticket needs no history"),
    pytest.param({1: 1.0}, [position(1)], (9,), [9], id="ticket still waiting for its deal"),
])
def test_tickets_to_explain(previous: dict[int, float] | None, now: list[TradePosition], pending: tuple[int, ...],
                            expected: list[int]) -> None:
    assert tickets_to_explain(previous, now, pending) == expected


def read(positions: list[TradePosition], deals: dict[int, tuple[TradeDeal, ...]] | None = None) -> SimpleNamespace:
    info = SimpleNamespace(login=1001, server="Demo", currency="USD", balance=1000.0, equity=990.0, profit=-10.0,
                           margin=50.0, margin_free=940.0, margin_level=1980.0)
    return SimpleNamespace(info=info, positions=tuple(positions), ticks={"EURUSD": tick(1.2, 1.2002, T0 + 9),
                           "GBPUSD": tick(1.24, 1.25, T0 + 7)}, points={"EURUSD": 1e-5, "GBPUSD": 1e-5},
                           trade_modes={}, gbp_rate=0.8, deals=deals or {})


def test_a_poll_reports_the_full_list_ticks_and_server_time() -> None:
    outcome = conclude_poll(read([position(2), position(1)]), PollState(), user_id="u-1", poll_seq=7)
    assert [p.ticket for p in outcome.positions.positions] == [1, 2]
    assert outcome.positions.positions[0].profit_gbp == 8.0
    assert outcome.positions.poll_seq == outcome.account.poll_seq == 7
    assert outcome.account.gbp_rate == 0.8
    assert outcome.account.server_time is not None and outcome.account.server_time.timestamp() == T0 + 9
    assert [t.symbol for t in outcome.ticks] == ["EURUSD"]  # held symbols only, not conversion symbols
    assert outcome.state.volumes == {1: 1.0, 2: 1.0}


def test_a_vanished_ticket_is_reported_with_its_closing_deal_once() -> None:
    before = PollState(volumes={1: 1.0, 2: 1.0})
    outcome = conclude_poll(read([position(1)], {2: (deal(20, 2, entry=c.DEAL_ENTRY_IN), deal(21, 2))}), before,
                            user_id="u-1", poll_seq=8)
    assert [(d.ticket, d.reason) for d in outcome.positions.closed_deals] == [(21, DealReason.SL)]
    assert outcome.state.waiting == {}


def test_a_vanished_ticket_without_a_deal_yet_is_looked_up_again_a_few_times() -> None:
    state = PollState(volumes={1: 1.0, 2: 1.0})
    looks = 0
    while True:
        outcome = conclude_poll(read([position(1)], {2: ()}), state, user_id="u-1", poll_seq=9)
        state, looks = outcome.state, looks + 1
        if 2 not in state.waiting:
            break
    assert looks == DEAL_WAIT_POLLS
    assert outcome.positions.closed_deals == ()


def test_a_partial_close_is_reported_once_while_the_position_stays_open() -> None:
    partial = deal(30, 1, reason=c.DEAL_REASON_CLIENT, volume=0.6)
    first = conclude_poll(read([position(1, volume=0.4)], {1: (partial,)}), PollState(volumes={1: 1.0}),
                          user_id="u-1", poll_seq=1)
    again = conclude_poll(read([position(1, volume=0.2)], {1: (partial, deal(31, 1, volume=0.2))}), first.state,
                          user_id="u-1", poll_seq=2)
    assert [d.ticket for d in first.positions.closed_deals] == [30]
    assert [d.ticket for d in again.positions.closed_deals] == [31]


def test_an_absurd_terminal_value_fails_validation_instead_of_being_reported() -> None:
    from pydantic import ValidationError

    broken = read([position(1)])
    broken.info.login = 0  # a login MT5 never gives: the schema refuses it
    with pytest.raises(ValidationError):
        conclude_poll(broken, PollState(), user_id="u-1", poll_seq=1)


def test_the_inverse_route_is_a_second_opinion_only_where_both_pairs_are_quoted():
    from producers.poller.parsing import Leg, inverse_route

    both = {"USDGBP", "GBPUSD"}.__contains__
    assert inverse_route((Leg("USDGBP", inverted=False),), both) == (Leg("GBPUSD", inverted=True),)
    assert inverse_route((Leg("GBPUSD", inverted=True),), {"GBPUSD"}.__contains__) is None
    assert inverse_route((), both) is None
