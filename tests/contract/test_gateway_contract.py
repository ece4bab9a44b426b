"""One contract for every way of reaching an MT5 terminal, run against each implementation available here.

- simulator: always runs;
- native: the MetaTrader5 package, Windows only; needs RECONGUARD_MT5_LOGIN/PASSWORD/SERVER;
- mt5linux: an RPyC server at RECONGUARD_MT5LINUX_HOST[:RECONGUARD_MT5LINUX_PORT], same credentials;
- simulator-over-mt5linux: always runs; the mt5linux gateway against `reconguard simulator`'s server.
Tests that trade run on demo accounts only (trade_mode DEMO) and only while the market is open.
RECONGUARD_MT5_SYMBOL names the symbol to use on a real terminal (default EURUSD).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from producers.mt5 import constants as c
from producers.mt5.gateway import (
    MT5LINUX_DEFAULT_PORT,
    Gateway,
    GatewayUnavailable,
    Mt5LinuxGateway,
    NativeGateway,
    SimulatorGateway,
)
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal
from producers.mt5.simulator.journal import World
from producers.mt5.simulator.server import SimulatorServer

SIM_LOGIN, SIM_PASSWORD = 5001, "contract"
NO_TICKET = 2**63 - 7  # no server hands out tickets this high


@dataclass(frozen=True)
class Terminal:
    gateway: Gateway
    login: int
    symbol: str


def _real_credentials() -> tuple[int, str, str]:
    login, password = os.environ.get("RECONGUARD_MT5_LOGIN"), os.environ.get("RECONGUARD_MT5_PASSWORD")
    server = os.environ.get("RECONGUARD_MT5_SERVER")
    if not (login and password and server):
        pytest.skip("set RECONGUARD_MT5_LOGIN, RECONGUARD_MT5_PASSWORD and RECONGUARD_MT5_SERVER")
    return int(login), password, server


def _simulator() -> tuple[Gateway, int, str, str]:
    broker = SimulatedBroker(seed=2024)
    broker.add_account(SIM_LOGIN, SIM_PASSWORD, currency="GBP")
    return SimulatorGateway(SimulatedTerminal(broker)), SIM_LOGIN, SIM_PASSWORD, broker.server


_SERVED: list[tuple[threading.Event, threading.Thread]] = []


def _simulator_over_mt5linux() -> tuple[Gateway, int, str, str]:
    broker = SimulatedBroker(seed=2024, start_time=time.time(), sessions=False)
    broker.add_account(SIM_LOGIN, SIM_PASSWORD, currency="GBP")
    world = World(broker)
    world.terminal(SIM_LOGIN, SIM_PASSWORD)
    for _ in range(20):
        try:
            server = SimulatorServer(world, None, base_port=random.randrange(20_000, 32_000))
            break
        except OSError:  # that port was taken: try another
            continue
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, kwargs={"stop": stop}, daemon=True)
    thread.start()
    _SERVED.append((stop, thread))
    return Mt5LinuxGateway("127.0.0.1", server.ports[SIM_LOGIN]), SIM_LOGIN, SIM_PASSWORD, broker.server


@pytest.fixture(scope="module", autouse=True)
def _stop_servers() -> Iterator[None]:
    yield
    for stop, thread in _SERVED:
        stop.set()
        thread.join(timeout=10)


def _native() -> tuple[Gateway, int, str, str]:
    if sys.platform != "win32":
        pytest.skip("MetaTrader5 only exists for Windows")
    try:
        gateway = NativeGateway()
    except GatewayUnavailable as error:
        pytest.skip(str(error))
    return (gateway, *_real_credentials())


def _mt5linux() -> tuple[Gateway, int, str, str]:
    host = os.environ.get("RECONGUARD_MT5LINUX_HOST", "")
    port = int(os.environ.get("RECONGUARD_MT5LINUX_PORT", MT5LINUX_DEFAULT_PORT))
    reason = f"mt5linux not installed / no RPYC server at {host or 'localhost'}:{port} (set RECONGUARD_MT5LINUX_HOST)"
    if not host:
        pytest.skip(reason)
    try:
        gateway = Mt5LinuxGateway(host, port)
    except GatewayUnavailable as error:
        pytest.skip(f"{reason}: {error}")
    return (gateway, *_real_credentials())


@pytest.fixture(params=[pytest.param(_simulator, id="simulator"),
                        pytest.param(_simulator_over_mt5linux, id="simulator-over-mt5linux"),
                        pytest.param(_native, id="native"),
                        pytest.param(_mt5linux, id="mt5linux")])
def terminal(request: pytest.FixtureRequest) -> Iterator[Terminal]:
    gateway, login, password, server = request.param()
    assert gateway.initialize(login=login, password=password, server=server), gateway.last_error()
    symbol = os.environ.get("RECONGUARD_MT5_SYMBOL", "EURUSD") if not isinstance(gateway, SimulatorGateway) \
        else "EURUSD"
    yield Terminal(gateway, login, symbol)
    gateway.shutdown()


def _demo_with_open_market(t: Terminal) -> None:
    if t.gateway.account_info().trade_mode != c.ACCOUNT_TRADE_MODE_DEMO:
        pytest.skip("trading contract tests only run on demo accounts")
    check = t.gateway.order_check(_market_request(t, c.ORDER_TYPE_BUY, _min_volume(t)))
    if check is not None and check.retcode == c.TRADE_RETCODE_MARKET_CLOSED:
        pytest.skip(f"market for {t.symbol} is closed")


def _min_volume(t: Terminal) -> float:
    return t.gateway.symbol_info(t.symbol).volume_min


def _filling(t: Terminal) -> int:
    """A filling mode the symbol accepts for market orders (the close executor's rule)."""
    info = t.gateway.symbol_info(t.symbol)
    if info.trade_exemode in (c.SYMBOL_TRADE_EXECUTION_REQUEST, c.SYMBOL_TRADE_EXECUTION_INSTANT):
        return c.ORDER_FILLING_FOK
    if info.filling_mode & 1:
        return c.ORDER_FILLING_FOK
    return c.ORDER_FILLING_IOC if info.filling_mode & 2 else c.ORDER_FILLING_RETURN


def _market_request(t: Terminal, order_type: int, volume: float, **extra: Any) -> dict[str, Any]:
    tick = t.gateway.symbol_info_tick(t.symbol)
    return {"action": c.TRADE_ACTION_DEAL, "symbol": t.symbol, "volume": float(volume), "type": order_type,
            "price": tick.ask if order_type == c.ORDER_TYPE_BUY else tick.bid, "deviation": 20,
            "magic": 770077, "comment": "reconguard contract", "type_time": c.ORDER_TIME_GTC,
            "type_filling": _filling(t)} | extra


def _send(t: Terminal, order_type: int, volume: float, **extra: Any) -> Any:
    """Send at the current quote, retrying requotes as the package's own helpers do."""
    for _ in range(5):
        result = t.gateway.order_send(_market_request(t, order_type, volume, **extra))
        if result is None or result.retcode not in (c.TRADE_RETCODE_REQUOTE, c.TRADE_RETCODE_PRICE_OFF):
            return result
    return result


# -- reading --------------------------------------------------------------------------------------------

def test_account_info_is_the_logged_in_account(terminal: Terminal) -> None:
    info = terminal.gateway.account_info()
    assert info is not None and info.login == terminal.login and len(info) == 28
    assert isinstance(info.currency, str) and info.equity == pytest.approx(info.balance + info.credit + info.profit,
                                                                           abs=0.02)
    assert terminal.gateway.last_error() == (1, "Success")


def test_terminal_reports_its_connection(terminal: Terminal) -> None:
    info = terminal.gateway.terminal_info()
    assert info is not None and info.connected is True and len(info) == 22


def test_positions_are_a_tuple_and_an_unknown_ticket_is_empty(terminal: Terminal) -> None:
    assert isinstance(terminal.gateway.positions_get(), tuple)
    assert terminal.gateway.positions_get(ticket=NO_TICKET) == ()
    assert terminal.gateway.last_error() == (1, "Success")
    assert terminal.gateway.history_deals_get(position=NO_TICKET) == ()


def test_symbol_and_tick(terminal: Terminal) -> None:
    assert terminal.gateway.symbol_select(terminal.symbol)
    info = terminal.gateway.symbol_info(terminal.symbol)
    tick = terminal.gateway.symbol_info_tick(terminal.symbol)
    assert info is not None and info.name == terminal.symbol and info.point == pytest.approx(10.0 ** -info.digits)
    assert tick is not None and tick.ask >= tick.bid > 0 and tick.time_msc // 1000 == tick.time


def test_unknown_symbol_is_not_found(terminal: Terminal) -> None:
    assert terminal.gateway.symbol_info("NO_SUCH_SYMBOL") is None
    assert terminal.gateway.last_error() == (-4, "Terminal: Not found")


def test_int_volume_is_refused_before_the_server(terminal: Terminal) -> None:
    request = _market_request(terminal, c.ORDER_TYPE_BUY, 1.0) | {"volume": 1}
    assert terminal.gateway.order_send(request) is None
    assert terminal.gateway.last_error() == (-2, 'Invalid "volume" argument')


def test_calls_after_shutdown_have_no_ipc_connection(terminal: Terminal) -> None:
    assert terminal.gateway.shutdown()
    assert terminal.gateway.account_info() is None
    assert terminal.gateway.last_error() == (-10004, "No IPC connection")


# -- trading (demo accounts, open market) ---------------------------------------------------------------------

def test_open_then_close_by_ticket(terminal: Terminal) -> None:
    _demo_with_open_market(terminal)
    volume = _min_volume(terminal)
    opened = _send(terminal, c.ORDER_TYPE_BUY, volume)
    assert opened is not None and opened.retcode == c.TRADE_RETCODE_DONE, opened
    (position,) = terminal.gateway.positions_get(ticket=opened.order)
    closed = _send(terminal, c.ORDER_TYPE_SELL, position.volume, position=position.ticket)
    assert closed is not None and closed.retcode == c.TRADE_RETCODE_DONE, closed
    assert terminal.gateway.positions_get(ticket=position.ticket) == ()
    entries = [d.entry for d in terminal.gateway.history_deals_get(position=position.ticket)]
    assert entries == [c.DEAL_ENTRY_IN, c.DEAL_ENTRY_OUT]
    again = _send(terminal, c.ORDER_TYPE_SELL, position.volume, position=position.ticket)
    assert again.retcode == c.TRADE_RETCODE_POSITION_CLOSED
    assert terminal.gateway.positions_get(ticket=position.ticket) == ()


def test_closing_more_than_held_is_refused(terminal: Terminal) -> None:
    _demo_with_open_market(terminal)
    volume = _min_volume(terminal)
    opened = _send(terminal, c.ORDER_TYPE_BUY, volume)
    assert opened.retcode == c.TRADE_RETCODE_DONE, opened
    try:
        refused = _send(terminal, c.ORDER_TYPE_SELL, volume * 2, position=opened.order)
        assert refused.retcode == c.TRADE_RETCODE_INVALID_CLOSE_VOLUME
        assert [p.volume for p in terminal.gateway.positions_get(ticket=opened.order)] == [volume]
    finally:
        _send(terminal, c.ORDER_TYPE_SELL, volume, position=opened.order)
