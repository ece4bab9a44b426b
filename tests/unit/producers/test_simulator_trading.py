"""Trade execution on the simulated server: retcodes, closes by ticket, SL/TP, gaps, stop-out, money."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from producers.mt5 import constants as c
from producers.mt5.simulator import DEFAULT_START, SimulatedBroker, SimulatedTerminal, SimulationError
from tests.unit.producers.conftest import LOGIN, PASSWORD, DealBuilder

CloseBuilder = Callable[..., dict[str, Any]]
SATURDAY_NOON = DEFAULT_START + 5 * 86400 + 4 * 3600


def _open(mt5: SimulatedTerminal, request: dict[str, Any]) -> int:
    result = mt5.order_send(request)
    assert result.retcode == c.TRADE_RETCODE_DONE, result
    return result.order


# -- rejected requests ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("symbol", "change", "retcode"), [
    pytest.param("EURUSD", {"volume": 0.001}, c.TRADE_RETCODE_INVALID_VOLUME, id="below volume_min"),
    pytest.param("EURUSD", {"volume": 0.015}, c.TRADE_RETCODE_INVALID_VOLUME, id="not a volume_step multiple"),
    pytest.param("EURUSD", {"volume": 500.0}, c.TRADE_RETCODE_INVALID_VOLUME, id="above volume_max"),
    pytest.param("US30", {"volume": 0.05}, c.TRADE_RETCODE_INVALID_VOLUME, id="index below its 0.1 lot minimum"),
    pytest.param("EURUSD", {"volume": 50.0}, c.TRADE_RETCODE_NO_MONEY, id="margin beyond free margin"),
    pytest.param("EURUSD", {"sl": 2.0}, c.TRADE_RETCODE_INVALID_STOPS, id="buy SL above the price"),
    pytest.param("EURUSD", {"tp": 0.5}, c.TRADE_RETCODE_INVALID_STOPS, id="buy TP below the price"),
    pytest.param("XAUUSD", {"type_filling": c.ORDER_FILLING_FOK}, c.TRADE_RETCODE_INVALID_FILL,
                 id="FOK on an IOC-only market-execution symbol"),
    pytest.param("US30", {"type_filling": c.ORDER_FILLING_IOC}, c.TRADE_RETCODE_INVALID_FILL,
                 id="IOC on a FOK-only market-execution symbol"),
    pytest.param("XAUUSD", {"type_filling": c.ORDER_FILLING_RETURN}, c.TRADE_RETCODE_INVALID_FILL,
                 id="RETURN never fills a market order on market execution"),
    pytest.param("EURUSD", {"price": 0.0}, c.TRADE_RETCODE_INVALID_PRICE, id="instant execution needs a price"),
    pytest.param("EURUSD", {"price": 1.2}, c.TRADE_RETCODE_REQUOTE, id="stale price beyond deviation requotes"),
    pytest.param("EURUSD", {"type": c.ORDER_TYPE_BUY_LIMIT}, c.TRADE_RETCODE_INVALID_ORDER, id="pending type on DEAL"),
    pytest.param("NOPE", {}, c.TRADE_RETCODE_INVALID, id="unknown symbol"),
    pytest.param("EURUSD", {"action": c.TRADE_ACTION_PENDING}, c.TRADE_RETCODE_INVALID, id="pending orders unsupported"),
])
def test_rejected_open(mt5: SimulatedTerminal, deal: DealBuilder, symbol: str, change: dict[str, Any],
                       retcode: int) -> None:
    quoted = "EURUSD" if symbol == "NOPE" else symbol  # an unknown symbol has no quote to build from
    filling = c.ORDER_FILLING_FOK if symbol == "US30" else c.ORDER_FILLING_IOC
    request = deal(quoted, type_filling=filling) | change | {"symbol": symbol}
    result = mt5.order_send(request)
    assert result.retcode == retcode, result
    assert result.deal == 0 and result.order == 0 and result.request.symbol == symbol
    assert mt5.positions_total() == 0
    assert mt5.last_error() == (1, "Success")  # a refusal is an answer, not a failure


def test_market_closed_at_the_weekend() -> None:
    broker = SimulatedBroker(seed=1, start_time=SATURDAY_NOON)
    broker.add_account(LOGIN, PASSWORD)
    mt5 = SimulatedTerminal(broker, login=LOGIN, password=PASSWORD)
    assert mt5.initialize()
    tick = mt5.symbol_info_tick("EURUSD")
    request = {"action": c.TRADE_ACTION_DEAL, "symbol": "EURUSD", "volume": 0.1, "type": c.ORDER_TYPE_BUY,
               "price": tick.ask}
    assert mt5.order_send(request).retcode == c.TRADE_RETCODE_MARKET_CLOSED
    broker.advance(3600)
    assert mt5.symbol_info_tick("EURUSD") == tick  # no quotes while closed


def test_order_check_reports_the_account_after_the_trade(mt5: SimulatedTerminal, deal: DealBuilder) -> None:
    check = mt5.order_check(deal(volume=1.0))
    assert check.retcode == 0 and check.comment == "Done"
    assert check.margin > 0 and check.margin_free == pytest.approx(check.equity - check.margin)
    assert mt5.positions_total() == 0
    assert mt5.order_check(deal(volume=50.0)).retcode == c.TRADE_RETCODE_NO_MONEY


# -- closing by ticket -------------------------------------------------------------------------------------

def test_close_by_ticket_full(mt5: SimulatedTerminal, deal: DealBuilder, close_request: CloseBuilder) -> None:
    ticket = _open(mt5, deal(volume=0.5))
    result = mt5.order_send(close_request(ticket))
    assert result.retcode == c.TRADE_RETCODE_DONE and result.order != ticket
    assert mt5.positions_get(ticket=ticket) == ()
    entries = [(d.entry, d.reason, d.volume) for d in mt5.history_deals_get(position=ticket)]
    assert entries == [(c.DEAL_ENTRY_IN, c.DEAL_REASON_EXPERT, 0.5), (c.DEAL_ENTRY_OUT, c.DEAL_REASON_EXPERT, 0.5)]
    (out,) = mt5.history_deals_get(ticket=result.order)  # ticket= selects deals by their order
    assert out.ticket == result.deal and out.price == result.price


def test_partial_close_keeps_the_ticket(mt5: SimulatedTerminal, deal: DealBuilder, close_request: CloseBuilder) -> None:
    ticket = _open(mt5, deal(volume=1.0))
    assert mt5.order_send(close_request(ticket, volume=0.3)).retcode == c.TRADE_RETCODE_DONE
    (position,) = mt5.positions_get(ticket=ticket)
    assert position.volume == 0.7
    assert mt5.history_deals_get(position=ticket)[-1].volume == 0.3


@pytest.mark.parametrize(("change", "retcode"), [
    pytest.param({"volume": 0.6}, c.TRADE_RETCODE_INVALID_CLOSE_VOLUME, id="more than the position holds"),
    pytest.param({"type": c.ORDER_TYPE_BUY}, c.TRADE_RETCODE_INVALID, id="same type as the position"),
    pytest.param({"symbol": "GBPUSD"}, c.TRADE_RETCODE_INVALID, id="another symbol than the position"),
    pytest.param({"position": 999}, c.TRADE_RETCODE_INVALID, id="ticket that never existed"),
])
def test_close_refused_never_opens(mt5: SimulatedTerminal, deal: DealBuilder, close_request: CloseBuilder,
                                   change: dict[str, Any], retcode: int) -> None:
    ticket = _open(mt5, deal(volume=0.5))
    result = mt5.order_send(close_request(ticket) | change)
    assert result.retcode == retcode
    assert [(p.ticket, p.volume) for p in mt5.positions_get()] == [(ticket, 0.5)]


def test_closing_twice_answers_position_closed(mt5: SimulatedTerminal, deal: DealBuilder,
                                               close_request: CloseBuilder) -> None:
    ticket = _open(mt5, deal(volume=0.5))
    request = close_request(ticket)
    assert mt5.order_send(request).retcode == c.TRADE_RETCODE_DONE
    again = mt5.order_send(request | {"price": mt5.symbol_info_tick("EURUSD").bid})
    assert again.retcode == c.TRADE_RETCODE_POSITION_CLOSED
    assert mt5.positions_total() == 0


def test_opposite_deal_without_position_opens_a_hedge(mt5: SimulatedTerminal, deal: DealBuilder) -> None:
    _open(mt5, deal(volume=0.5))
    _open(mt5, deal(type=c.ORDER_TYPE_SELL, volume=0.5))
    assert sorted(p.type for p in mt5.positions_get()) == [c.POSITION_TYPE_BUY, c.POSITION_TYPE_SELL]


def test_close_by(mt5: SimulatedTerminal, deal: DealBuilder) -> None:
    buy = _open(mt5, deal(volume=0.5))
    sell = _open(mt5, deal(type=c.ORDER_TYPE_SELL, volume=0.3))
    result = mt5.order_send({"action": c.TRADE_ACTION_CLOSE_BY, "position": buy, "position_by": sell})
    assert result.retcode == c.TRADE_RETCODE_DONE
    assert [(p.ticket, p.volume) for p in mt5.positions_get()] == [(buy, 0.2)]
    assert {d.entry for d in mt5.history_deals_get(ticket=result.order)} == {c.DEAL_ENTRY_OUT_BY}


def test_sltp_modification(mt5: SimulatedTerminal, deal: DealBuilder) -> None:
    ticket = _open(mt5, deal(volume=0.1))
    bid = mt5.symbol_info_tick("EURUSD").bid
    request = {"action": c.TRADE_ACTION_SLTP, "position": ticket, "symbol": "EURUSD",
               "sl": round(bid - 0.002, 5), "tp": round(bid + 0.002, 5)}
    assert mt5.order_send(request).retcode == c.TRADE_RETCODE_DONE
    assert mt5.positions_get(ticket=ticket)[0].sl == request["sl"]
    assert mt5.order_send(request).retcode == c.TRADE_RETCODE_NO_CHANGES
    too_close = request | {"sl": round(bid - 0.00005, 5)}  # inside the 10-point stops level
    assert mt5.order_send(too_close).retcode == c.TRADE_RETCODE_INVALID_STOPS


# -- the market closes positions ---------------------------------------------------------------------------

@pytest.mark.parametrize(("position_type", "move", "reason", "tag"), [
    pytest.param(c.ORDER_TYPE_BUY, -0.003, c.DEAL_REASON_SL, "sl", id="buy stopped out below"),
    pytest.param(c.ORDER_TYPE_BUY, +0.003, c.DEAL_REASON_TP, "tp", id="buy takes profit above"),
    pytest.param(c.ORDER_TYPE_SELL, +0.003, c.DEAL_REASON_SL, "sl", id="sell stopped out above"),
    pytest.param(c.ORDER_TYPE_SELL, -0.003, c.DEAL_REASON_TP, "tp", id="sell takes profit below"),
])
def test_sl_tp_fire_with_their_reason(broker: SimulatedBroker, mt5: SimulatedTerminal, deal: DealBuilder,
                                      position_type: int, move: float, reason: int, tag: str) -> None:
    tick = mt5.symbol_info_tick("EURUSD")
    sign = 1 if position_type == c.ORDER_TYPE_BUY else -1
    mid = tick.bid
    ticket = _open(mt5, deal(type=position_type, sl=round(mid - sign * 0.002, 5), tp=round(mid + sign * 0.002, 5)))
    broker.set_quote("EURUSD", round(mid + move, 5))
    assert mt5.positions_get(ticket=ticket) == ()
    out = mt5.history_deals_get(position=ticket)[-1]
    assert (out.entry, out.reason, out.magic) == (c.DEAL_ENTRY_OUT, reason, 42)
    assert out.comment.startswith(f"[{tag} ")


def test_gap_through_the_stop_fills_worse_than_the_stop(broker: SimulatedBroker, mt5: SimulatedTerminal,
                                                        deal: DealBuilder) -> None:
    bid = mt5.symbol_info_tick("EURUSD").bid
    sl = round(bid - 0.0020, 5)
    ticket = _open(mt5, deal(sl=sl))
    broker.gap("EURUSD", -2.0)
    out = mt5.history_deals_get(position=ticket)[-1]
    assert out.reason == c.DEAL_REASON_SL
    assert out.price < sl - 0.01  # filled at the gapped market, about 200 pips below the stop


def test_stop_out_closes_the_biggest_loser_first(broker: SimulatedBroker) -> None:
    broker.add_account(3003, "so", currency="GBP", balance=1_000.0, leverage=100)
    mt5 = SimulatedTerminal(broker, login=3003, password="so")
    assert mt5.initialize()
    eur = broker.manual_open(3003, "EURUSD", c.ORDER_TYPE_BUY, 1.0)
    gbp = broker.manual_open(3003, "GBPUSD", c.ORDER_TYPE_BUY, 0.1)
    broker.gap("EURUSD", -1.0)
    stop_outs = [d for d in mt5.history_deals_get(0, 2**31 - 1) if d.reason == c.DEAL_REASON_SO]
    assert [d.position_id for d in stop_outs] == [eur]
    assert stop_outs[0].comment.startswith("[so ")
    assert [p.ticket for p in mt5.positions_get()] == [gbp]
    info = mt5.account_info()
    assert info.margin_level >= info.margin_so_so


# -- money ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("symbol", "move", "convert"), [
    pytest.param("EURUSD", 0.0100, lambda usd, b: usd / b.tick("GBPUSD").ask, id="USD profit via GBPUSD"),
    pytest.param("USDJPY", 1.000, lambda jpy, b: jpy / b.tick("USDJPY").ask / b.tick("GBPUSD").ask,
                 id="JPY profit via USDJPY and GBPUSD"),
    pytest.param("EURGBP", 0.0100, lambda gbp, b: gbp, id="GBP profit needs no conversion"),
])
def test_profit_is_converted_into_the_account_currency(broker: SimulatedBroker, mt5: SimulatedTerminal,
                                                       symbol: str, move: float, convert: Any) -> None:
    ticket = broker.manual_open(LOGIN, symbol, c.ORDER_TYPE_BUY, 0.1)
    (position,) = mt5.positions_get(ticket=ticket)
    broker.set_quote(symbol, position.price_open + move)
    (position,) = mt5.positions_get(ticket=ticket)
    raw = (position.price_current - position.price_open) * 100_000 * 0.1
    assert position.profit == pytest.approx(convert(raw, broker), abs=0.011)
    info = mt5.account_info()
    assert info.profit == position.profit and info.equity == pytest.approx(info.balance + info.profit)
    deal_ticket = broker.manual_close(LOGIN, ticket)
    (out,) = [d for d in mt5.history_deals_get(position=ticket) if d.ticket == deal_ticket]
    assert out.profit == position.profit and out.reason == c.DEAL_REASON_CLIENT
    assert mt5.account_info().balance == pytest.approx(10_000.0 + out.profit)


def test_margin_in_account_currency_and_hedged_larger_leg(broker: SimulatedBroker, mt5: SimulatedTerminal) -> None:
    broker.manual_open(LOGIN, "EURUSD", c.ORDER_TYPE_BUY, 1.0)
    one_leg = mt5.account_info().margin
    assert one_leg == pytest.approx(100_000 / 100 * broker.tick("EURGBP").bid, rel=1e-3)  # EUR margin in GBP
    broker.manual_open(LOGIN, "EURUSD", c.ORDER_TYPE_SELL, 0.5)
    assert mt5.account_info().margin == pytest.approx(one_leg, rel=1e-3)
    assert mt5.order_calc_margin(c.ORDER_TYPE_BUY, "EURUSD", 1.0, 1.1) == pytest.approx(one_leg, rel=1e-3)


def test_manual_helpers_record_client_reason(broker: SimulatedBroker, mt5: SimulatedTerminal) -> None:
    ticket = broker.manual_open(LOGIN, "GBPUSD", c.ORDER_TYPE_SELL, 0.2, comment="phone")
    broker.manual_modify(LOGIN, ticket, sl=round(broker.tick("GBPUSD").ask + 0.01, 5))
    assert mt5.positions_get(ticket=ticket)[0].sl > 0
    assert mt5.positions_get(ticket=ticket)[0].reason == c.POSITION_REASON_CLIENT
    broker.manual_close(LOGIN, ticket, volume=0.1)
    assert [d.reason for d in mt5.history_deals_get(position=ticket)] == [c.DEAL_REASON_CLIENT] * 2
    with pytest.raises(SimulationError):
        broker.manual_close(LOGIN, ticket, volume=5.0)


def test_history_by_dates_includes_the_initial_deposit(broker: SimulatedBroker, mt5: SimulatedTerminal,
                                                       deal: DealBuilder) -> None:
    start = int(broker.server_now())
    _open(mt5, deal())
    broker.advance(60)
    deals = mt5.history_deals_get(start, int(broker.server_now()))
    assert [d.type for d in deals] == [c.DEAL_TYPE_BALANCE, c.DEAL_TYPE_BUY]
    assert deals[0].profit == 10_000.0
    assert mt5.history_deals_total(start, int(broker.server_now())) == 2
    assert mt5.history_deals_get(start, int(broker.server_now()), group="GBP*") == ()
    assert len(mt5.history_orders_get(start, int(broker.server_now()))) == 1
    assert mt5.history_deals_get(start + 30, start + 40) == ()


# -- injected faults ------------------------------------------------------------------------------------------

def test_requote_probability_only_hits_instant_execution(broker: SimulatedBroker, mt5: SimulatedTerminal,
                                                          deal: DealBuilder) -> None:
    broker.set_faults(requote_probability=1.0)
    result = mt5.order_send(deal())
    assert result.retcode == c.TRADE_RETCODE_REQUOTE and result.bid > 0 and result.ask > result.bid
    assert mt5.order_send(deal("XAUUSD")).retcode == c.TRADE_RETCODE_DONE  # market execution never requotes


def test_slippage_moves_the_fill_against_the_trader(broker: SimulatedBroker, mt5: SimulatedTerminal,
                                                    deal: DealBuilder) -> None:
    broker.set_faults(slippage_probability=1.0, slippage_points=5)
    request = deal("XAUUSD", deviation=0)
    result = mt5.order_send(request)
    assert result.retcode == c.TRADE_RETCODE_DONE
    assert request["price"] < result.price <= round(request["price"] + 0.05, 2)
    eur = deal(deviation=0)
    assert mt5.order_send(eur).retcode == c.TRADE_RETCODE_REQUOTE  # instant: a slip past deviation requotes


def test_price_off(broker: SimulatedBroker, mt5: SimulatedTerminal, deal: DealBuilder) -> None:
    broker.set_faults(price_off_probability=1.0)
    assert mt5.order_send(deal()).retcode == c.TRADE_RETCODE_PRICE_OFF


def test_lost_reply_executes_but_returns_none(broker: SimulatedBroker, mt5: SimulatedTerminal,
                                              deal: DealBuilder, close_request: CloseBuilder) -> None:
    ticket = _open(mt5, deal(volume=0.5))
    broker.set_faults(lost_reply_probability=1.0)
    request = close_request(ticket)
    assert mt5.order_send(request) is None
    assert mt5.last_error() == (-10002, "IPC recv failed")
    assert mt5.positions_get(ticket=ticket) == ()  # it was closed all the same
    broker.set_faults(lost_reply_probability=0.0)
    assert mt5.order_send(request).retcode == c.TRADE_RETCODE_POSITION_CLOSED  # a retry cannot open anything
    assert mt5.positions_total() == 0


def test_server_disconnect_shows_stale_data(broker: SimulatedBroker, mt5: SimulatedTerminal,
                                            deal: DealBuilder) -> None:
    bid = mt5.symbol_info_tick("EURUSD").bid
    ticket = _open(mt5, deal(sl=round(bid - 0.002, 5)))
    before = mt5.account_info()
    broker.disconnect(LOGIN)
    broker.set_quote("EURUSD", round(bid - 0.01, 5))  # the stop fires on the server meanwhile
    assert mt5.terminal_info().connected is False
    assert mt5.account_info() == before
    assert [p.ticket for p in mt5.positions_get()] == [ticket]  # the terminal has not heard of it
    assert mt5.order_send(deal()).retcode == c.TRADE_RETCODE_CONNECTION
    broker.reconnect(LOGIN)
    assert mt5.terminal_info().connected is True
    assert mt5.positions_get() == ()
    assert mt5.history_deals_get(position=ticket)[-1].reason == c.DEAL_REASON_SL


def test_a_terminal_cut_off_knows_the_history_up_to_the_cut_only(broker: SimulatedBroker, mt5: SimulatedTerminal,
                                                                  deal: DealBuilder) -> None:
    bid = mt5.symbol_info_tick("EURUSD").bid
    ticket = _open(mt5, deal(sl=round(bid - 0.002, 5)))
    broker.advance(5)
    broker.disconnect(LOGIN)
    broker.advance(5)
    broker.set_quote("EURUSD", round(bid - 0.01, 5))  # the stop fires on the server while it is cut off
    window = (0, 2**31 - 1)
    assert [d.entry for d in mt5.history_deals_get(*window) if d.position_id == ticket] == [c.DEAL_ENTRY_IN]
    assert len(mt5.history_orders_get(*window)) == 1 == mt5.history_orders_total(*window)
    broker.reconnect(LOGIN)
    entries = [d.entry for d in mt5.history_deals_get(*window) if d.position_id == ticket]
    assert entries == [c.DEAL_ENTRY_IN, c.DEAL_ENTRY_OUT]
    assert len(mt5.history_orders_get(*window)) == 2 == mt5.history_orders_total(*window)


def test_ipc_disconnect_fails_every_call(broker: SimulatedBroker, mt5: SimulatedTerminal) -> None:
    broker.disconnect(LOGIN, kind="ipc")
    assert mt5.account_info() is None and mt5.last_error() == (-10004, "No IPC connection")
    assert mt5.terminal_info() is None
    assert mt5.initialize() is False and mt5.last_error()[0] == -10003
    broker.reconnect(LOGIN)
    assert mt5.initialize() and mt5.account_info().login == LOGIN


def test_per_call_disconnect_probability(broker: SimulatedBroker, mt5: SimulatedTerminal) -> None:
    broker.set_faults(disconnect_probability=0.5)
    answers = [mt5.account_info() is not None for _ in range(200)]
    assert 50 < sum(answers) < 150
    broker.set_faults(disconnect_probability=0.0)
    assert mt5.account_info() is not None


def test_manual_trades_reach_the_server_while_the_terminal_is_cut_off(broker: SimulatedBroker) -> None:
    broker.disconnect(LOGIN)
    ticket = broker.manual_open(LOGIN, "EURUSD", c.ORDER_TYPE_BUY, 0.1)
    mt5 = SimulatedTerminal(broker, login=LOGIN, password=PASSWORD)
    assert mt5.initialize()
    assert mt5.positions_get() == ()
    broker.reconnect(LOGIN)
    assert [p.ticket for p in mt5.positions_get()] == [ticket]
