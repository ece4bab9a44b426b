"""Close requests, filling modes and the retry policy; and closing one ticket on the simulator."""

from __future__ import annotations

import uuid

import pytest

from producers.executor.client import close_ticket, resolve_unknown
from producers.executor.parsing import (
    SYMBOL_FILLING_FOK,
    SYMBOL_FILLING_IOC,
    CloseSettings,
    RetryPolicy,
    close_comment,
    close_request,
    filling_mode,
)
from producers.mt5 import constants as c
from producers.mt5.gateway import SimulatorGateway
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal
from producers.mt5.types import Tick, TradePosition

T0 = 1_704_700_800


def position(type: int, volume: float = 0.7) -> TradePosition:
    return TradePosition(42, T0, T0 * 1000, T0, T0 * 1000, type, 0, 42, 0, volume, 1.1, 0.0, 0.0, 1.2, 0.0, 5.0,
                         "EURUSD", "", "")


TICK = Tick(T0, 1.10010, 1.10022, 0.0, 0, T0 * 1000, 6, 0.0)


@pytest.mark.parametrize(("position_type", "order_type", "price"), [
    pytest.param(c.POSITION_TYPE_BUY, c.ORDER_TYPE_SELL, 1.10010, id="a buy is closed by selling at bid"),
    pytest.param(c.POSITION_TYPE_SELL, c.ORDER_TYPE_BUY, 1.10022, id="a sell is closed by buying at ask"),
])
def test_close_request_names_the_position_and_trades_the_opposite_side(position_type: int, order_type: int,
                                                                      price: float) -> None:
    request = close_request(position(position_type), TICK, filling=c.ORDER_FILLING_IOC,
                            settings=CloseSettings(deviation=15, magic=9), comment="x")
    assert request == {"action": c.TRADE_ACTION_DEAL, "position": 42, "symbol": "EURUSD", "volume": 0.7,
                       "type": order_type, "price": price, "deviation": 15, "type_filling": c.ORDER_FILLING_IOC,
                       "type_time": c.ORDER_TIME_GTC, "magic": 9, "comment": "x"}
    assert all(type(request[k]) is float for k in ("volume", "price")), "the package refuses ints there"


@pytest.mark.parametrize(("bits", "mode"), [
    pytest.param(SYMBOL_FILLING_FOK | SYMBOL_FILLING_IOC, c.ORDER_FILLING_FOK, id="both allowed: fill or kill"),
    pytest.param(SYMBOL_FILLING_IOC, c.ORDER_FILLING_IOC, id="IOC only"),
    pytest.param(SYMBOL_FILLING_FOK, c.ORDER_FILLING_FOK, id="FOK only"),
    pytest.param(0, c.ORDER_FILLING_RETURN, id="neither: return (market/exchange execution)"),
])
def test_filling_mode_is_one_the_symbol_allows(bits: int, mode: int) -> None:
    assert filling_mode(bits) == mode


@pytest.mark.parametrize(("retcode", "attempt", "again"), [
    pytest.param(c.TRADE_RETCODE_REQUOTE, 1, True, id="requote: retry"),
    pytest.param(c.TRADE_RETCODE_PRICE_CHANGED, 2, True, id="price changed: retry"),
    pytest.param(c.TRADE_RETCODE_PRICE_OFF, 1, True, id="price off: retry"),
    pytest.param(c.TRADE_RETCODE_REQUOTE, 3, False, id="requote after the last attempt: give up"),
    pytest.param(c.TRADE_RETCODE_NO_MONEY, 1, False, id="a rejection is final"),
    pytest.param(c.TRADE_RETCODE_MARKET_CLOSED, 1, False, id="market closed is final"),
])
def test_retry_policy(retcode: int, attempt: int, again: bool) -> None:
    assert RetryPolicy(max_attempts=3).should_retry(retcode, attempt) is again


def test_the_comment_fits_the_package_limit_and_names_the_command() -> None:
    command_id = uuid.uuid4()
    assert len(close_comment(command_id)) <= 29
    assert command_id.hex[:16] in close_comment(command_id)


class Counting(SimulatorGateway):
    sends = 0

    def order_send(self, request):  # type: ignore[no-untyped-def]
        self.sends += 1
        return super().order_send(request)


def simulated(**faults: float) -> tuple[SimulatedBroker, Counting]:
    broker = SimulatedBroker(11)
    broker.add_account(77, "pw", currency="GBP")
    broker.set_faults(**faults)
    gateway = Counting(SimulatedTerminal(broker, login=77, password="pw"))
    assert gateway.initialize(login=77, password="pw", server=broker.server)
    return broker, gateway


def test_a_requote_is_retried_at_a_fresh_price_a_bounded_number_of_times() -> None:
    broker, gateway = simulated(requote_probability=1.0)
    ticket = broker.manual_open(77, "EURUSD", c.ORDER_TYPE_BUY, 0.5)
    attempted = close_ticket(gateway, ticket=ticket, symbol="EURUSD", comment="c",
                             settings=CloseSettings(retry=RetryPolicy(max_attempts=4)))
    assert (attempted.status, attempted.retcode, attempted.attempts, gateway.sends) == (
        "failed", c.TRADE_RETCODE_REQUOTE, 4, 4)
    assert gateway.positions_get(ticket=ticket), "still open: nothing traded"


def test_a_close_reports_price_volume_and_the_deals_profit() -> None:
    broker, gateway = simulated()
    ticket = broker.manual_open(77, "GBPUSD", c.ORDER_TYPE_SELL, 0.3)
    attempted = close_ticket(gateway, ticket=ticket, symbol="GBPUSD", comment="c", settings=CloseSettings())
    (deal,) = [d for d in broker.deals(77) if d.position_id == ticket and d.entry == c.DEAL_ENTRY_OUT]
    assert (attempted.status, attempted.retcode, attempted.volume) == ("closed", c.TRADE_RETCODE_DONE, 0.3)
    assert (attempted.price, attempted.pnl, deal.reason) == (deal.price, deal.profit, c.DEAL_REASON_EXPERT)
    assert gateway.positions_get() == ()


def test_a_ticket_of_another_symbol_is_not_traded() -> None:
    broker, gateway = simulated()
    ticket = broker.manual_open(77, "GBPUSD", c.ORDER_TYPE_BUY, 0.3)
    attempted = close_ticket(gateway, ticket=ticket, symbol="EURUSD", comment="c", settings=CloseSettings())
    assert attempted.status == "failed" and "not EURUSD" in (attempted.error or "")
    assert gateway.sends == 0


def test_a_lost_reply_is_resolved_from_the_deals_not_by_sending_again() -> None:
    broker, gateway = simulated(lost_reply_probability=1.0)
    ticket = broker.manual_open(77, "EURUSD", c.ORDER_TYPE_BUY, 0.2)
    attempted = close_ticket(gateway, ticket=ticket, symbol="EURUSD", comment="rg close abc", settings=CloseSettings())
    assert (attempted.status, gateway.sends) == ("closed", 1)
    assert attempted.pnl is not None and attempted.entry_price is not None


def test_resolving_finds_a_close_made_by_someone_else() -> None:
    broker, gateway = simulated()
    ticket = broker.manual_open(77, "EURUSD", c.ORDER_TYPE_BUY, 0.2)
    assert resolve_unknown(gateway, ticket=ticket, comment="rg close x", magic=1, attempts=0) is None, "still open"
    broker.manual_close(77, ticket)
    found = resolve_unknown(gateway, ticket=ticket, comment="rg close x", magic=1, attempts=0)
    assert found is not None and (found.status, found.closed_by, found.by_command) == ("superseded", "manual", None)
    assert found.closing_deal is not None and "already closed by manual" in (found.error or "")


def test_a_ticket_another_command_closed_is_superseded_by_that_command_not_failed() -> None:
    broker, gateway = simulated()
    ticket = broker.manual_open(77, "XAUUSD", c.ORDER_TYPE_BUY, 0.1)
    first, second = uuid.uuid4(), uuid.uuid4()
    closed = close_ticket(gateway, ticket=ticket, symbol="XAUUSD", comment=close_comment(first),
                          settings=CloseSettings())
    again = close_ticket(gateway, ticket=ticket, symbol="XAUUSD", comment=close_comment(second),
                         settings=CloseSettings())
    assert closed.status == "closed"
    assert (again.status, again.closed_by, again.by_command) == ("superseded", "close_command", first.hex[:16])
    assert gateway.sends == 1, "the second command sent nothing"


def test_a_ticket_closed_by_its_stop_is_superseded_by_the_stop() -> None:
    broker, gateway = simulated()
    bid = broker.tick("EURUSD").bid
    ticket = broker.manual_open(77, "EURUSD", c.ORDER_TYPE_BUY, 0.1, sl=round(bid - 0.0020, 5))
    broker.set_quote("EURUSD", round(bid - 0.0030, 5))  # through the stop
    found = close_ticket(gateway, ticket=ticket, symbol="EURUSD", comment="rg close y", settings=CloseSettings())
    assert (found.status, found.closed_by, gateway.sends) == ("superseded", "sl", 0)


def test_market_closed_is_deferred_not_failed() -> None:
    broker = SimulatedBroker(11, start_time=T0 + 14 * 3600 - 5)  # metals break: 22:00 UTC in January
    broker.add_account(77, "pw", currency="GBP")
    gateway = Counting(SimulatedTerminal(broker, login=77, password="pw"))
    assert gateway.initialize(login=77, password="pw", server=broker.server)
    ticket = broker.manual_open(77, "XAUUSD", c.ORDER_TYPE_BUY, 0.1)
    broker.advance(10)
    refused = close_ticket(gateway, ticket=ticket, symbol="XAUUSD", comment="rg close z", settings=CloseSettings())
    assert (refused.status, refused.retcode, refused.ledger_status) == ("deferred", c.TRADE_RETCODE_MARKET_CLOSED,
                                                                         "failed")


def test_a_restarted_terminal_is_initialized_again_before_a_close() -> None:
    broker, gateway = simulated()
    ticket = broker.manual_open(77, "EURUSD", c.ORDER_TYPE_BUY, 0.2)
    broker.disconnect(77, kind="ipc")
    assert not gateway.initialize()  # the pipe is gone: the terminal is now detached
    broker.reconnect(77)
    attempted = close_ticket(gateway, ticket=ticket, symbol="EURUSD", comment="c", settings=CloseSettings())
    assert (attempted.status, gateway.sends) == ("closed", 1)
