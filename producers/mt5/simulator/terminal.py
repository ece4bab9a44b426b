"""SimulatedTerminal: one terminal process, usable wherever the ``MetaTrader5`` module is expected.

It reproduces the package's surface: the 32 functions with their calling conventions (METH_NOARGS
functions raise TypeError on any argument, positional-only ones on keywords; the others answer bad
arguments with None/False and code -2), the 223 constants as attributes, ``__version__``, and the error
model (every call except ``last_error()`` first resets the error to (1, 'Success'); failures return
None or False and set it; "nothing found" is an empty tuple, not a failure).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from producers.mt5 import constants as c
from producers.mt5.simulator.accounts import Account, raw_margin, raw_profit
from producers.mt5.simulator.args import (
    ApiError,
    arity,
    c_number,
    enforce_convention,
    filters,
    group_matches,
    history_query,
    parse_request,
    symbol_arg,
    to_epoch,
)
from producers.mt5.simulator.broker import Link, SimulatedBroker
from producers.mt5.simulator.market import TIMEFRAMES, SymbolMarket
from producers.mt5.simulator.views import (
    PACKAGE_VERSION,
    VERSION,
    build_book,
    build_symbol_info,
    build_terminal_info,
)
from producers.mt5.types import (
    AccountInfo,
    BookInfo,
    OrderCheckResult,
    OrderSendResult,
    SymbolInfo,
    TerminalInfo,
    Tick,
    TradeDeal,
    TradeOrder,
    TradePosition,
)

SUCCESS = (c.RES_S_OK, "Success")
_F = TypeVar("_F", bound=Callable[..., Any])


def _no_ipc() -> ApiError:
    return ApiError("No IPC connection", c.RES_E_INTERNAL_FAIL_CONNECT)


def _not_found() -> ApiError:
    return ApiError("Terminal: Not found", c.RES_E_NOT_FOUND)


def _api(convention: str, failure: object = None) -> Callable[[_F], _F]:
    """Wrap one API function: argument convention, error reset, broker lock, failure value."""

    def decorate(fn: _F) -> _F:
        name = fn.__name__
        # Which arguments the convention refuses, known here once: a call that passes none of them
        # (nearly every call) skips the check. The check itself raises what CPython would.
        refuses_keywords, refuses_positional = convention != "keywords", convention == "noargs"

        @functools.wraps(fn)
        def call(self: SimulatedTerminal, *args: Any, **kwargs: Any) -> Any:
            if (kwargs and refuses_keywords) or (args and refuses_positional):
                enforce_convention(name, convention, args, kwargs)
            self._error = SUCCESS
            with self._broker.lock:
                try:
                    return fn(self, *args, **kwargs)
                except ApiError as error:
                    self._error = (error.code, error.message)
                    return failure

        return call  # type: ignore[return-value]

    return decorate


class SimulatedTerminal:
    """One terminal attached to a SimulatedBroker; see the module docstring."""

    __version__ = PACKAGE_VERSION
    __author__ = "MetaQuotes Ltd."

    def __init__(self, broker: SimulatedBroker, *, login: int | None = None, password: str | None = None) -> None:
        self._broker = broker
        self._saved_login = login
        self._saved_password = password
        self._login: int | None = None
        self._error: tuple[int, str] = SUCCESS
        self._deselected: set[str] = set()
        self._books: set[str] = set()

    # -- session -----------------------------------------------------------------------------------

    def _session(self) -> tuple[Account, Link]:
        """The attached account, or the IPC failure the package reports."""
        login, broker = self._login, self._broker
        if login is None:
            raise _no_ipc()
        link = broker.links[login]
        if link.state == "ipc":
            raise _no_ipc()
        p = broker.faults.disconnect_probability
        if p and link.rng.random() < p:
            raise _no_ipc()
        return broker.desk.accounts[login], link

    def _attach(self, login: int | None, password: str | None, server: str | None, timeout: int) -> None:
        login = self._saved_login if login is None else login
        if password is None and login == self._saved_login:
            password = self._saved_password
        link = self._broker.links.get(login) if login is not None else None
        if link is not None and link.state == "ipc":
            raise ApiError(f"IPC initialize failed, Pipe server didn't answer in {timeout // 1000} sec",
                           c.RES_E_INTERNAL_FAIL_INIT)
        if login is None or password is None or self._broker.authenticate(login, password, server) is None:
            raise ApiError("Terminal: Authorization failed", c.RES_E_AUTH_FAILED)
        self._login, self._saved_login, self._saved_password = login, login, password

    @staticmethod
    def _credentials(kwargs: dict[str, Any]) -> tuple[int | None, str | None, str | None, int]:
        login, password = kwargs.get("login"), kwargs.get("password")
        server, timeout = kwargs.get("server"), kwargs.get("timeout", 60_000)
        if login is not None and not (isinstance(login, int) and login >= 0):
            raise ApiError('Invalid "login" argument')
        if password is not None and not isinstance(password, str):
            raise ApiError('Invalid "password" argument')
        if server is not None and not isinstance(server, str):
            raise ApiError('Invalid "server" argument')
        if not isinstance(timeout, int):
            raise ApiError('Invalid "timeout" argument')
        return login, password, server, timeout

    @_api("keywords", failure=False)
    def initialize(self, *args: Any, **kwargs: Any) -> bool:
        if len(args) > 1:
            raise ApiError("Invalid number of arguments")
        path = args[0] if args else kwargs.get("path")
        if path is not None and not isinstance(path, str):
            raise ApiError('Invalid "path" argument')
        login, password, server, timeout = self._credentials(kwargs)
        self._login = None  # re-initializing drops the old pipe first
        self._attach(login, password, server, timeout)
        return True

    @_api("keywords", failure=False)
    def login(self, *args: Any, **kwargs: Any) -> bool:
        if len(args) > 4:
            raise ApiError("Invalid number of arguments")
        merged = dict(zip(("login", "password", "server", "timeout"), args)) | kwargs
        login, password, server, timeout = self._credentials(merged)
        if login is None:
            raise ApiError('Invalid "login" argument')
        self._session()
        self._attach(login, password, server, timeout)
        return True

    @_api("noargs")
    def shutdown(self) -> bool:
        self._login = None
        return True  # the 5.0.6231 binary returns True (the docs say None)

    @_api("noargs", failure=(0, 0, ""))
    def version(self) -> tuple[int, int, str]:
        self._session()
        return VERSION

    def last_error(self, *args: Any, **kwargs: Any) -> tuple[int, str]:
        enforce_convention("last_error", "noargs", args, kwargs)
        return self._error  # reading the error does not reset it

    # -- account and terminal ------------------------------------------------------------------------

    @_api("noargs")
    def terminal_info(self) -> TerminalInfo:
        _, link = self._session()
        return build_terminal_info(connected=link.state == "up", trade_allowed=link.algo_trading,
                                   company=self._broker.company, login=self._login)

    @_api("noargs")
    def account_info(self) -> AccountInfo:
        account, link = self._session()
        return link.frozen.account if link.frozen else account.account_info(self._broker.market)

    # -- positions and orders --------------------------------------------------------------------------

    def _positions(self) -> tuple[TradePosition, ...]:
        account, link = self._session()
        return link.frozen.positions if link.frozen else account.trade_positions(self._broker.market)

    @_api("noargs")
    def positions_total(self) -> int:
        return len(self._positions())

    @_api("keywords")
    def positions_get(self, *args: Any, **kwargs: Any) -> tuple[TradePosition, ...]:
        if args:
            raise ApiError("Unnamed arguments not allowed")
        if not kwargs:  # every poll asks for all positions
            return self._positions()
        ticket, symbol, group = filters(kwargs)
        positions = self._positions()
        if ticket is not None:  # the package checks ticket first, then symbol, then group
            return tuple(p for p in positions if p.ticket == ticket)
        if symbol is not None:
            return tuple(p for p in positions if p.symbol == symbol)
        if group is not None:
            return tuple(p for p in positions if group_matches(group, p.symbol))
        return positions

    @_api("noargs")
    def orders_total(self) -> int:
        self._session()
        return 0  # pending orders are not simulated

    @_api("keywords")
    def orders_get(self, *args: Any, **kwargs: Any) -> tuple[TradeOrder, ...]:
        if args:
            raise ApiError("Unnamed arguments not allowed")
        filters(kwargs)
        self._session()
        return ()

    # -- history -------------------------------------------------------------------------------------

    def _history_cutoff(self, link: Link) -> int:
        """A terminal cut off from its server only knows the history up to the cut."""
        return link.frozen.time_msc if link.frozen else 2**63

    @_api("positional")
    def history_orders_total(self, *args: Any) -> int:
        arity(args, 2)
        date_from, date_to = to_epoch(args[0]), to_epoch(args[1])
        account, link = self._session()
        cutoff = self._history_cutoff(link)
        return sum(1 for o in account.orders_between(date_from, date_to) if o.time_done_msc <= cutoff)

    @_api("positional")
    def history_deals_total(self, *args: Any) -> int:
        arity(args, 2)
        date_from, date_to = to_epoch(args[0]), to_epoch(args[1])
        account, link = self._session()
        cutoff = self._history_cutoff(link)
        return sum(1 for d in account.deals_between(date_from, date_to) if d.time_msc <= cutoff)

    @_api("keywords")
    def history_orders_get(self, *args: Any, **kwargs: Any) -> tuple[TradeOrder, ...]:
        query = history_query(args, kwargs)
        account, link = self._session()
        if query[0] == "ticket":
            found = [o for o in account.orders if o.ticket == query[1]]
        elif query[0] == "position":
            found = [o for o in account.orders if o.position_id == query[1]]
        else:
            found = account.orders_between(query[1], query[2])
            if query[3] is not None:
                found = [o for o in found if group_matches(query[3], o.symbol)]
        if link.frozen is None:  # connected: it knows the whole history
            return tuple(found)
        cutoff = self._history_cutoff(link)
        return tuple(o for o in found if o.time_done_msc <= cutoff)

    @_api("keywords")
    def history_deals_get(self, *args: Any, **kwargs: Any) -> tuple[TradeDeal, ...]:
        query = history_query(args, kwargs)
        account, link = self._session()
        if query[0] == "ticket":  # deals whose order is that ticket, as the docs define it
            found = [d for d in account.deals if d.order == query[1]]
        elif query[0] == "position":
            found = [d for d in account.deals if d.position_id == query[1]]
        else:  # every poll asks for its window of money flows, without a group: the slice is the answer
            found = account.deals_between(query[1], query[2])
            if query[3] is not None:
                found = [d for d in found if group_matches(query[3], d.symbol)]
        if link.frozen is None:  # connected: it knows the whole history
            return tuple(found)
        cutoff = self._history_cutoff(link)
        return tuple(d for d in found if d.time_msc <= cutoff)

    # -- trading -------------------------------------------------------------------------------------

    @_api("keywords")
    def order_send(self, *args: Any, **kwargs: Any) -> OrderSendResult:
        request = parse_request(args, kwargs)
        account, link = self._session()
        if not link.algo_trading:
            raise ApiError("Auto-Trading using Python API disabled in Terminal", c.RES_E_AUTO_TRADING_DISABLED)
        link.request_id += 1
        desk, faults = self._broker.desk, self._broker.faults
        if link.state == "server":
            return desk.rejected(request, c.TRADE_RETCODE_CONNECTION, link.request_id)
        result = desk.send(account, request, reason=c.DEAL_REASON_EXPERT, request_id=link.request_id,
                           faults=faults, rng=link.rng)
        lost = faults.lost_reply_probability
        if lost and result.retcode == c.TRADE_RETCODE_DONE and link.rng.random() < lost:
            raise ApiError("IPC recv failed", c.RES_E_INTERNAL_FAIL_RECEIVE)  # executed, answer lost
        return result

    @_api("keywords")
    def order_check(self, *args: Any, **kwargs: Any) -> OrderCheckResult:
        request = parse_request(args, kwargs)
        account, _ = self._session()
        return self._broker.desk.check(account, request)

    @_api("positional")
    def order_calc_margin(self, *args: Any) -> float:
        arity(args, 4)
        action = c_number("order_calc_margin", args[0], int)
        volume, price = (c_number("order_calc_margin", v, float) for v in args[2:])
        account, _ = self._session()
        market = self._symbol(args[1])
        if action not in range(c.ORDER_TYPE_BUY, c.ORDER_TYPE_SELL_STOP_LIMIT + 1):
            raise ApiError("Terminal: Invalid params")
        margin = raw_margin(market.spec, volume, price, account.leverage)  # same formula either side
        return round(margin * self._broker.market.rate(market.spec.currency_margin, account.currency), 2)

    @_api("positional")
    def order_calc_profit(self, *args: Any) -> float:
        arity(args, 5)
        action = c_number("order_calc_profit", args[0], int)
        volume, price_open, price_close = (c_number("order_calc_profit", v, float) for v in args[2:])
        account, _ = self._session()
        market = self._symbol(args[1])
        if action not in (c.ORDER_TYPE_BUY, c.ORDER_TYPE_SELL):
            raise ApiError("Terminal: Invalid params")
        profit = raw_profit(market.spec, action, volume, price_open, price_close)
        return round(profit * self._broker.market.rate(market.spec.currency_profit, account.currency), 2)

    # -- symbols -------------------------------------------------------------------------------------

    def _symbol(self, name: object, *, missing: Callable[[], ApiError] = _not_found) -> SymbolMarket:
        market = self._broker.market.symbols.get(symbol_arg(name))
        if market is None or market.spec.name in self._deselected:
            raise missing()
        return market

    def _tick(self, market: SymbolMarket, link: Link) -> Tick:
        tick = link.frozen.ticks.get(market.spec.name) if link.frozen else market.tick
        assert tick is not None
        return tick

    def _symbol_info(self, market: SymbolMarket, account: Account, link: Link) -> SymbolInfo:
        spec = market.spec
        tick_value = spec.contract_size * market.point * self._broker.market.rate(spec.currency_profit,
                                                                                  account.currency)
        return build_symbol_info(market, self._tick(market, link), tick_value=round(tick_value, 5),
                                 selected=spec.name not in self._deselected)

    @_api("noargs")
    def symbols_total(self) -> int:
        self._session()
        return len(self._broker.market.symbols)

    @_api("keywords")
    def symbols_get(self, *args: Any, **kwargs: Any) -> tuple[SymbolInfo, ...]:
        if len(args) > 1 or (args and "group" in kwargs):
            raise ApiError("Invalid number of arguments")
        group = args[0] if args else kwargs.get("group")
        if group is not None and not isinstance(group, str):
            raise ApiError('Invalid "group" argument')
        account, link = self._session()
        return tuple(self._symbol_info(m, account, link) for m in self._broker.market.symbols.values()
                     if group is None or group_matches(group, m.spec.name))

    @_api("positional")
    def symbol_info(self, *args: Any) -> SymbolInfo:
        arity(args, 1)
        account, link = self._session()
        return self._symbol_info(self._symbol(args[0]), account, link)

    @_api("positional")
    def symbol_info_tick(self, *args: Any) -> Tick:
        arity(args, 1)
        _, link = self._session()
        return self._tick(self._symbol(args[0]), link)

    @_api("positional", failure=False)
    def symbol_select(self, *args: Any) -> bool:
        if len(args) not in (1, 2):
            raise ApiError("Invalid arguments")
        name, enable = symbol_arg(args[0]), bool(args[1]) if len(args) == 2 else True
        account, _ = self._session()
        if name not in self._broker.market.symbols:
            raise _not_found()
        if not enable and any(p.symbol == name for p in account.positions.values()):
            raise ApiError("Terminal: Call failed", c.RES_E_FAIL)  # a symbol in use cannot leave Market Watch
        (self._deselected.discard if enable else self._deselected.add)(name)
        return True

    # -- market depth --------------------------------------------------------------------------------

    @_api("positional", failure=False)
    def market_book_add(self, *args: Any) -> bool:
        arity(args, 1)
        self._session()
        self._books.add(self._symbol(args[0]).spec.name)
        return True

    @_api("positional", failure=False)
    def market_book_release(self, *args: Any) -> bool:
        arity(args, 1)
        self._session()
        self._books.discard(self._symbol(args[0]).spec.name)
        return True

    @_api("positional")
    def market_book_get(self, *args: Any) -> tuple[BookInfo, ...]:
        arity(args, 1)
        _, link = self._session()
        market = self._symbol(args[0])
        if market.spec.name not in self._books:
            raise ApiError("Terminal: Call failed", c.RES_E_FAIL)  # needs a market_book_add first
        return build_book(market, self._tick(market, link))

    # -- history arrays ------------------------------------------------------------------------------

    @_api("positional")
    def copy_ticks_from(self, *args: Any) -> np.ndarray:
        arity(args, 4)
        symbol, date_from = symbol_arg(args[0]), to_epoch(args[1])
        count, flags = c_number("copy_ticks_from", args[2], int), c_number("copy_ticks_from", args[3], int)
        self._session()
        return self._symbol(symbol).ticks_from(date_from * 1000, count, flags)

    @_api("positional")
    def copy_ticks_range(self, *args: Any) -> np.ndarray:
        arity(args, 4)
        symbol, date_from, date_to = symbol_arg(args[0]), to_epoch(args[1]), to_epoch(args[2])
        flags = c_number("copy_ticks_range", args[3], int)
        self._session()
        return self._symbol(symbol).ticks_range(date_from * 1000, date_to * 1000, flags)

    def _rates_symbol(self, name: str, timeframe: int) -> SymbolMarket:
        self._session()
        market = self._symbol(name, missing=lambda: ApiError("Terminal: Call failed", c.RES_E_FAIL))
        if timeframe not in TIMEFRAMES:
            raise ApiError("Terminal: Invalid params")
        return market

    @_api("positional")
    def copy_rates_from(self, *args: Any) -> np.ndarray:
        arity(args, 4)
        symbol, date_from = symbol_arg(args[0]), to_epoch(args[2])
        timeframe, count = c_number("copy_rates_from", args[1], int), c_number("copy_rates_from", args[3], int)
        return self._rates_symbol(symbol, timeframe).rates_from(timeframe, date_from, count)

    @_api("positional")
    def copy_rates_from_pos(self, *args: Any) -> np.ndarray:
        arity(args, 4)
        symbol = symbol_arg(args[0])
        timeframe, start, count = (c_number("copy_rates_from_pos", v, int) for v in args[1:])
        return self._rates_symbol(symbol, timeframe).rates_from_pos(timeframe, start, count)

    @_api("positional")
    def copy_rates_range(self, *args: Any) -> np.ndarray:
        arity(args, 4)
        symbol, date_from, date_to = symbol_arg(args[0]), to_epoch(args[2]), to_epoch(args[3])
        timeframe = c_number("copy_rates_range", args[1], int)
        return self._rates_symbol(symbol, timeframe).rates_range(timeframe, date_from, date_to)


# The package's constants are module attributes; here they are attributes of every terminal.
for _name, _value in vars(c).items():
    if _name.isupper():
        setattr(SimulatedTerminal, _name, _value)
