"""The simulated terminal answers like the MetaTrader5 package: argument checks and the error model."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pytest

from producers.mt5 import constants as c
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal
from producers.mt5.simulator.market import RATE_DTYPE, TICK_DTYPE
from tests.unit.producers.conftest import LOGIN, PASSWORD, DealBuilder

SUCCESS = (1, "Success")
NO_IPC = (-10004, "No IPC connection")


@pytest.mark.parametrize(("change", "error"), [
    pytest.param({"volume": 1}, 'Invalid "volume" argument', id="int volume is refused"),
    pytest.param({"sl": 0}, 'Invalid "sl" argument', id="int sl 0 is refused"),
    pytest.param({"price": "1.1"}, 'Invalid "price" argument', id="str price is refused"),
    pytest.param({"action": 1.0}, 'Invalid "action" argument', id="float action is refused"),
    pytest.param({"magic": np.int64(5)}, 'Invalid "magic" argument', id="numpy int magic is refused"),
    pytest.param({"deviation": -1}, 'Invalid "deviation" argument', id="negative unsigned field is refused"),
    pytest.param({"symbol": "X" * 30}, 'Invalid "symbol" argument', id="30-char symbol is refused"),
    pytest.param({"comment": "c" * 30}, 'Invalid "comment" argument', id="30-char comment is refused"),
    pytest.param({"action": "1", "volume": 1}, 'Invalid "action" argument', id="first failing key in order wins"),
    pytest.param({"volume": 1, "type": 0.0}, 'Invalid "volume" argument', id="volume is checked before type"),
    pytest.param({"position_by": 1.5}, 'Invalid "position_by" argument', id="last key is validated too"),
])
def test_request_field_refused(mt5: SimulatedTerminal, deal: DealBuilder, change: dict[str, Any], error: str) -> None:
    assert mt5.order_send(deal() | change) is None
    assert mt5.last_error() == (-2, error)
    assert mt5.order_check(deal() | change) is None
    assert mt5.last_error() == (-2, error)
    assert mt5.positions_total() == 0


@pytest.mark.parametrize("change", [
    pytest.param({"volume": np.float64(0.1)}, id="numpy float64 volume passes"),
    pytest.param({"magic": True}, id="bool for an int field passes"),
    pytest.param({"comment": "c" * 29}, id="29-char comment passes"),
    pytest.param({"unknown_key": object()}, id="unknown keys are ignored"),
])
def test_request_field_accepted(mt5: SimulatedTerminal, deal: DealBuilder, change: dict[str, Any]) -> None:
    result = mt5.order_send(deal() | change)
    assert result.retcode == c.TRADE_RETCODE_DONE, result
    assert mt5.last_error() == SUCCESS


@pytest.mark.parametrize(("args", "kwargs", "error"), [
    pytest.param((), {}, "Invalid number of arguments", id="no arguments"),
    pytest.param(({}, {}), {}, "Invalid number of arguments", id="two positionals"),
    pytest.param(([("action", 1)],), {}, "Invalid arguments", id="not a dict"),
    pytest.param(({"action": 1},), {"symbol": "EURUSD"}, "Unnamed arguments not allowed", id="dict and keywords"),
])
def test_request_shape_refused(mt5: SimulatedTerminal, args: tuple[Any, ...], kwargs: dict[str, Any],
                               error: str) -> None:
    assert mt5.order_send(*args, **kwargs) is None
    assert mt5.last_error() == (-2, error)


def test_request_as_keywords_and_request_echo(mt5: SimulatedTerminal, deal: DealBuilder) -> None:
    request = deal(volume=0.2)
    del request["comment"]
    result = mt5.order_send(**request)
    assert result.retcode == c.TRADE_RETCODE_DONE
    assert result.comment == "Request executed"
    assert result.request.comment == "" and result.request.stoplimit == 0.0 and result.request.volume == 0.2
    assert result.request._asdict()["symbol"] == "EURUSD"
    assert len(result) == 11 and result[0] == 10009


def test_calls_before_initialize_have_no_ipc_connection(broker: SimulatedBroker) -> None:
    terminal = SimulatedTerminal(broker, login=LOGIN, password=PASSWORD)
    assert terminal.account_info() is None and terminal.last_error() == NO_IPC
    assert terminal.positions_get() is None and terminal.last_error() == NO_IPC
    assert terminal.symbol_select("EURUSD") is False and terminal.last_error() == NO_IPC
    assert terminal.order_send({"action": 1, "symbol": "EURUSD", "volume": 0.1}) is None


def test_shutdown_detaches(mt5: SimulatedTerminal) -> None:
    assert mt5.shutdown() is True
    assert mt5.account_info() is None
    assert mt5.last_error() == NO_IPC


@pytest.mark.parametrize(("kwargs", "error"), [
    pytest.param({"login": LOGIN, "password": "wrong"}, (-6, "Terminal: Authorization failed"), id="wrong password"),
    pytest.param({"login": 999, "password": PASSWORD}, (-6, "Terminal: Authorization failed"), id="unknown login"),
    pytest.param({"login": LOGIN, "password": PASSWORD, "server": "Other-Live"},
                 (-6, "Terminal: Authorization failed"), id="wrong server"),
    pytest.param({"login": "1001"}, (-2, 'Invalid "login" argument'), id="login as str"),
    pytest.param({"timeout": 1.5}, (-2, 'Invalid "timeout" argument'), id="float timeout"),
])
def test_initialize_refused(broker: SimulatedBroker, kwargs: dict[str, Any], error: tuple[int, str]) -> None:
    terminal = SimulatedTerminal(broker)
    assert terminal.initialize(**kwargs) is False
    assert terminal.last_error() == error
    assert terminal.account_info() is None


def test_initialize_with_credentials_and_login_switch(broker: SimulatedBroker) -> None:
    broker.add_account(2002, "other", currency="USD")
    terminal = SimulatedTerminal(broker)
    assert terminal.initialize(login=LOGIN, password=PASSWORD, server=broker.server)
    assert terminal.account_info().currency == "GBP"
    assert terminal.login(2002, "other")
    assert terminal.account_info().login == 2002


def test_last_error_is_not_reset_by_reading_it_but_by_the_next_call(mt5: SimulatedTerminal) -> None:
    assert mt5.symbol_info("NOPE") is None
    assert mt5.last_error() == (-4, "Terminal: Not found")
    assert mt5.last_error() == (-4, "Terminal: Not found")
    assert mt5.symbols_total() == 6
    assert mt5.last_error() == SUCCESS


@pytest.mark.parametrize("call", [
    pytest.param(lambda t: t.positions_get(ticket=123), id="positions_get unknown ticket"),
    pytest.param(lambda t: t.positions_get(symbol="GBPUSD"), id="positions_get symbol without positions"),
    pytest.param(lambda t: t.orders_get(), id="orders_get"),
    pytest.param(lambda t: t.history_deals_get(position=123), id="history_deals_get unknown position"),
    pytest.param(lambda t: t.history_orders_get(ticket=123), id="history_orders_get unknown ticket"),
    pytest.param(lambda t: t.symbols_get(group="*JPY*,!USD*"), id="symbols_get group matching nothing"),
])
def test_nothing_found_is_an_empty_tuple_and_success(mt5: SimulatedTerminal, call: Any) -> None:
    assert call(mt5) == ()
    assert mt5.last_error() == SUCCESS


@pytest.mark.parametrize(("call", "error"), [
    pytest.param(lambda t: t.positions_get("EURUSD"), (-2, "Unnamed arguments not allowed"), id="positional filter"),
    pytest.param(lambda t: t.positions_get(symbol="X" * 30), (-2, 'Invalid "symbol" argument'), id="long symbol"),
    pytest.param(lambda t: t.positions_get(ticket="1"), (-2, 'Invalid "ticket" argument'), id="str ticket"),
    pytest.param(lambda t: t.history_deals_get(), (-2, "Invalid arguments"), id="history without arguments"),
    pytest.param(lambda t: t.history_deals_get(0, 10, position=1), (-2, "Unnamed arguments not allowed"),
                 id="history dates with position"),
    pytest.param(lambda t: t.history_deals_get(date(2024, 1, 1), date(2024, 2, 1)), (-2, "Invalid arguments"),
                 id="history with date instead of datetime"),
    pytest.param(lambda t: t.symbol_info(), (-2, "Invalid arguments"), id="symbol_info without symbol"),
    pytest.param(lambda t: t.symbol_info(5), (-2, "Invalid arguments"), id="symbol_info with int"),
    pytest.param(lambda t: t.symbol_info_tick("NOPE"), (-4, "Terminal: Not found"), id="tick of unknown symbol"),
    pytest.param(lambda t: t.copy_rates_from_pos("NOPE", c.TIMEFRAME_M1, 0, 10), (-1, "Terminal: Call failed"),
                 id="rates of unknown symbol"),
    pytest.param(lambda t: t.copy_ticks_from("NOPE", 0, 10, c.COPY_TICKS_ALL), (-4, "Terminal: Not found"),
                 id="ticks of unknown symbol"),
    pytest.param(lambda t: t.market_book_get("EURUSD"), (-1, "Terminal: Call failed"), id="book without add"),
])
def test_failures_return_none_and_set_last_error(mt5: SimulatedTerminal, call: Any, error: tuple[int, str]) -> None:
    assert call(mt5) is None
    assert mt5.last_error() == error


def test_non_numeric_c_argument_surfaces_as_system_error(mt5: SimulatedTerminal) -> None:
    with pytest.raises(SystemError):
        mt5.copy_rates_from_pos("EURUSD", c.TIMEFRAME_M1, 0, "ten")


def test_auto_trading_disabled(broker: SimulatedBroker, mt5: SimulatedTerminal, deal: DealBuilder) -> None:
    broker.set_algo_trading(LOGIN, False)
    assert mt5.order_send(deal()) is None
    assert mt5.last_error() == (-8, "Auto-Trading using Python API disabled in Terminal")
    assert mt5.terminal_info().trade_allowed is False


def test_struct_sequences_behave_like_the_package(mt5: SimulatedTerminal) -> None:
    info = mt5.account_info()
    assert len(info) == 28 and info[0] == LOGIN and info.login == LOGIN
    assert list(info._asdict())[:3] == ["login", "trade_mode", "leverage"]
    assert isinstance(mt5.positions_get(), tuple)
    assert mt5.version()[0] == 500
    assert mt5.__version__ == "5.0.6231"


def test_symbol_select_and_market_watch(mt5: SimulatedTerminal) -> None:
    assert mt5.symbol_select("US30", False)
    assert mt5.symbol_info_tick("US30") is None and mt5.last_error()[0] == -4
    assert mt5.symbol_select("US30", True)
    assert mt5.symbol_info("US30").select is True


def test_market_book(mt5: SimulatedTerminal) -> None:
    assert mt5.market_book_add("EURUSD")
    book = mt5.market_book_get("EURUSD")
    sells = [b.price for b in book if b.type == c.BOOK_TYPE_SELL]
    buys = [b.price for b in book if b.type == c.BOOK_TYPE_BUY]
    assert sells == sorted(sells, reverse=True) and buys == sorted(buys, reverse=True)
    assert book[0].type == c.BOOK_TYPE_SELL and min(sells) > max(buys)


def test_tick_and_rate_arrays_have_the_packed_dtypes(broker: SimulatedBroker, mt5: SimulatedTerminal) -> None:
    start = int(broker.server_now())
    broker.advance(600)
    ticks = mt5.copy_ticks_range("EURUSD", start, int(broker.server_now()), c.COPY_TICKS_ALL)
    rates = mt5.copy_rates_from_pos("EURUSD", c.TIMEFRAME_M1, 0, 5)
    for array, dtype in ((ticks, TICK_DTYPE), (rates, RATE_DTYPE)):
        assert array.dtype == dtype and array.dtype.itemsize == 60
        assert [array.dtype.fields[n][1] for n in array.dtype.names] == [0, 8, 16, 24, 32, 40, 48, 52]
    assert len(ticks) > 300 and (ticks["time_msc"] // 1000 == ticks["time"]).all()
    assert len(rates) == 5 and rates["time"][-1] == int(broker.server_now()) // 60 * 60  # position 0 is forming
    assert mt5.copy_ticks_range("EURUSD", start, int(broker.server_now()), c.COPY_TICKS_TRADE).size == 0
    empty = mt5.copy_ticks_range("EURUSD", 0, 1000, c.COPY_TICKS_ALL)
    assert empty.size == 0 and empty.dtype == TICK_DTYPE and mt5.last_error() == SUCCESS


def test_rates_windows(broker: SimulatedBroker, mt5: SimulatedTerminal) -> None:
    start = int(broker.server_now())
    broker.advance(3 * 3600)
    hours = mt5.copy_rates_range("EURUSD", c.TIMEFRAME_H1, datetime.fromtimestamp(start, UTC),
                                 start + 2 * 3600)
    assert list(hours["time"]) == [start, start + 3600, start + 7200]
    two = mt5.copy_rates_from("EURUSD", c.TIMEFRAME_M15, start + 3600, 2)
    assert list(two["time"]) == [start + 2700, start + 3600]
    m1 = mt5.copy_rates_range("EURUSD", c.TIMEFRAME_M1, start, start + 3599)
    assert hours[0]["high"] == m1["high"].max() and hours[0]["tick_volume"] == m1["tick_volume"].sum()
