"""A simulated MT5 trade server and market (SimulatedBroker) and terminals that talk to it.

One SimulatedBroker is shared by many accounts; each SimulatedTerminal is one terminal process and can be
used wherever the ``MetaTrader5`` module is expected. Everything is driven by the simulated clock
(``advance``/``advance_to``) and seeded random streams, so a scenario replays identically.

Disconnects come in the two shapes a real terminal shows, chosen per call of ``disconnect``:
- ``kind="server"`` (default): the terminal runs but has lost its trade server. ``terminal_info().connected``
  is False, reads return what the terminal last saw (stale account, positions, ticks and history, as
  MT5 keeps showing them), and ``order_send`` answers retcode 10031 (TRADE_RETCODE_CONNECTION). This is
  the dangerous case for a poller, because the data looks fine; it must check ``connected``.
- ``kind="ipc"``: the terminal process is gone: every call returns None/False with
  (-10004, 'No IPC connection'), and ``initialize`` fails with -10003.
The per-call ``FaultConfig.disconnect_probability`` is a one-call IPC hiccup of the second kind.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from infra.settings.markets import NEW_YORK_CLOSE, MarketSettings
from producers.mt5 import constants as c
from producers.mt5.simulator.accounts import Account
from producers.mt5.simulator.faults import FaultConfig
from producers.mt5.simulator.market import DEFAULT_SYMBOLS, FILLING_FOK, MarketModel, SymbolSpec
from producers.mt5.simulator.trading import TradeServer
from producers.mt5.types import AccountInfo, OrderSendResult, Tick, TradeDeal, TradePosition, TradeRequest

DEFAULT_START = 1_704_700_800  # Monday 2024-01-08 08:00 UTC: every default symbol is trading

DisconnectKind = Literal["server", "ipc"]
NO_FAULTS = FaultConfig()


class SimulationError(Exception):
    """A scenario helper (manual_open/close/modify) was refused by the server; carries the result."""

    def __init__(self, result: OrderSendResult) -> None:
        super().__init__(f"retcode {result.retcode}: {result.comment}")
        self.result = result


@dataclass(frozen=True, slots=True)
class Frozen:
    """What a terminal last saw before it lost the trade server."""

    time_msc: int
    account: AccountInfo
    positions: tuple[TradePosition, ...]
    ticks: dict[str, Tick]


@dataclass(slots=True)
class Link:
    """One account's connection state and its own fault dice (so accounts never shift each other's)."""

    rng: random.Random
    state: Literal["up", "server", "ipc"] = "up"
    algo_trading: bool = True
    frozen: Frozen | None = None
    request_id: int = 0


class SimulatedBroker:
    """The trade server plus the market. Thread-safe: every public method holds ``lock``."""

    def __init__(self, seed: int = 0, *, start_time: float = DEFAULT_START, tick_interval: float = 1.0,
                 symbols: Iterable[SymbolSpec] = DEFAULT_SYMBOLS, faults: FaultConfig = NO_FAULTS,
                 sessions: bool = True, server: str = "ReconGuard-Demo",
                 company: str = "ReconGuard Simulated Markets Ltd", max_ticks_per_symbol: int = 2_000_000,
                 markets: MarketSettings | None = None, server_clock: str = NEW_YORK_CLOSE) -> None:
        self.seed = seed
        self.server = server
        self.company = company
        self.faults = faults
        self.lock = threading.RLock()
        self.market = MarketModel(seed, tuple(symbols), start_msc=round(start_time * 1000),
                                  tick_interval=tick_interval, sessions=sessions, max_ticks=max_ticks_per_symbol,
                                  markets=markets, server_clock=server_clock)
        self.desk = TradeServer(self.market)
        self.links: dict[int, Link] = {}

    # -- the clock -----------------------------------------------------------------------------------

    def now(self) -> float:
        """True UTC, epoch seconds (what the terminal writes is ``server_now``)."""
        return self.market.clock_msc / 1000

    def server_now(self) -> float:
        """The server clock, epoch seconds as MT5 writes it (labelled UTC)."""
        return self.market.server_msc() / 1000

    def advance(self, seconds: float) -> None:
        """Move the market forward; SL/TP and stop-out are evaluated after every tick step."""
        if seconds < 0:
            raise ValueError("the simulated clock only moves forward")
        with self.lock:
            target = self.market.clock_msc + round(seconds * 1000)
            for ticked in self.market.steps_until(target, self.faults):
                self.desk.on_ticks(ticked)
                self.desk.enforce_stop_out()

    def advance_to(self, epoch_seconds: float) -> None:
        with self.lock:
            delta = epoch_seconds - self.now()
        if delta > 0:
            self.advance(delta)

    # -- market hooks for scenarios --------------------------------------------------------------------

    def symbols(self) -> tuple[str, ...]:
        return tuple(self.market.symbols)

    def tick(self, symbol: str) -> Tick:
        with self.lock:
            tick = self.market.symbols[symbol].tick
            assert tick is not None  # every symbol is quoted from the start
            return tick

    def gap(self, symbol: str, pct: float) -> None:
        """Jump the price by pct percent now (e.g. -2.0); a closed market shows the gap when it opens."""
        with self.lock:
            quote = self.market.symbols[symbol]
            self._react(quote.jump(self.market.clock_msc, pct, record=self.market.is_open(symbol)), symbol)

    def set_quote(self, symbol: str, bid: float, ask: float | None = None) -> None:
        """Quote exactly this bid (and ask, else the current spread) now, even in a closed session:
        it is a test hook, and SL/TP react to it at once."""
        with self.lock:
            self._react(self.market.symbols[symbol].set_quote(self.market.clock_msc, bid, ask), symbol)

    def widen_spread(self, symbol: str, factor: float = 5.0, ticks: int = 30) -> None:
        with self.lock:
            self.market.symbols[symbol].widen(factor, ticks)

    def set_faults(self, **changes: float) -> FaultConfig:
        with self.lock:
            self.faults = dataclasses.replace(self.faults, **changes)  # type: ignore[arg-type]
            return self.faults

    def _react(self, ticked: bool, symbol: str) -> None:
        if ticked:
            self.market.touched()
            self.desk.on_ticks([self.market.symbols[symbol]])
            self.desk.enforce_stop_out()

    # -- accounts ------------------------------------------------------------------------------------

    def add_account(self, login: int, password: str, server: str | None = None, *, currency: str = "USD",
                    balance: float = 10_000.0, leverage: int = 100, margin_so_call: float = 100.0,
                    margin_so_so: float = 50.0, name: str = "", trade_mode: int = c.ACCOUNT_TRADE_MODE_DEMO,
                    margin_mode: int = c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING) -> None:
        if margin_mode != c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING:
            raise ValueError("only hedging accounts (margin_mode 2) are simulated")
        with self.lock:
            if login in self.desk.accounts:
                raise ValueError(f"account {login} already exists")
            self.market.rate("USD", currency)  # refuses a currency the quotes cannot convert into
            account = Account(login, password, server or self.server, currency, 0.0, leverage, margin_so_call,
                              margin_so_so, name or f"Demo {login}", self.company, trade_mode)
            self.desk.accounts[login] = account
            self.links[login] = Link(random.Random(f"{self.seed}:account:{login}"))
            if balance:
                self.desk.balance_operation(account, balance, "Initial deposit")

    def deposit(self, login: int, amount: float, comment: str = "Deposit") -> int:
        """A balance operation (negative = withdrawal); returns the DEAL_TYPE_BALANCE deal ticket."""
        with self.lock:
            return self.desk.balance_operation(self.account(login), amount, comment)

    def credit(self, login: int, amount: float, comment: str = "Credit") -> int:
        """A credit operation (negative = credit taken back); returns the DEAL_TYPE_CREDIT deal ticket."""
        with self.lock:
            return self.desk.balance_operation(self.account(login), amount, comment, c.DEAL_TYPE_CREDIT)

    def account(self, login: int) -> Account:
        return self.desk.accounts[login]

    def authenticate(self, login: int, password: str, server: str | None) -> Account | None:
        account = self.desk.accounts.get(login)
        if account is None or account.password != password or server not in (None, account.server):
            return None
        return account

    def account_info(self, login: int) -> AccountInfo:
        """The live figures, whatever the terminal's connection (scenarios and tests use this)."""
        with self.lock:
            return self.account(login).account_info(self.market)

    def deals(self, login: int) -> tuple[TradeDeal, ...]:
        with self.lock:
            return tuple(self.account(login).deals)

    # -- manual trading (the trader's phone or desktop: reason CLIENT, no API faults) -----------------

    def manual_open(self, login: int, symbol: str, type: int, volume: float, *, sl: float = 0.0,
                    tp: float = 0.0, magic: int = 0, comment: str = "") -> int:
        """Open a position as the trader would by hand; returns its ticket."""
        with self.lock:
            quote = self.market.symbols[symbol]
            price = quote.ask if type == c.ORDER_TYPE_BUY else quote.bid
            return self._manual(login, c.TRADE_ACTION_DEAL, symbol, type, volume, price, sl, tp, magic,
                                comment, 0).order

    def manual_close(self, login: int, ticket: int, volume: float | None = None) -> int:
        """Close (part of) a position by hand; returns the closing deal's ticket."""
        with self.lock:
            position = self.account(login).positions.get(ticket)
            if position is None:
                raise KeyError(f"account {login} has no open position {ticket}")
            quote = self.market.symbols[position.symbol]
            close_type = position.close_deal_type
            price = quote.ask if close_type == c.ORDER_TYPE_BUY else quote.bid
            return self._manual(login, c.TRADE_ACTION_DEAL, position.symbol, close_type,
                                position.volume if volume is None else volume, price, 0.0, 0.0, position.magic,
                                "", ticket).deal

    def manual_modify(self, login: int, ticket: int, *, sl: float | None = None, tp: float | None = None) -> None:
        with self.lock:
            position = self.account(login).positions.get(ticket)
            if position is None:
                raise KeyError(f"account {login} has no open position {ticket}")
            self._manual(login, c.TRADE_ACTION_SLTP, position.symbol, 0, 0.0, 0.0,
                         position.sl if sl is None else sl, position.tp if tp is None else tp,
                         position.magic, "", ticket)

    def _manual(self, login: int, action: int, symbol: str, type: int, volume: float, price: float, sl: float,
                tp: float, magic: int, comment: str, position: int) -> OrderSendResult:
        spec = self.market.symbols[symbol].spec
        filling = c.ORDER_FILLING_FOK if spec.filling_mode & FILLING_FOK else c.ORDER_FILLING_IOC
        request = TradeRequest(action, magic, 0, symbol, float(volume), float(price), 0.0, float(sl), float(tp),
                               0, type, filling, c.ORDER_TIME_GTC, 0, comment, position, 0)
        result = self.desk.send(self.account(login), request, reason=c.DEAL_REASON_CLIENT, request_id=0)
        if result.retcode != c.TRADE_RETCODE_DONE:
            raise SimulationError(result)
        return result

    # -- connections and terminals ---------------------------------------------------------------------

    def disconnect(self, login: int, *, kind: DisconnectKind = "server") -> None:
        """Cut one account's terminal off: see the module docstring for the two kinds."""
        with self.lock:
            link = self.links[login]
            if link.frozen is None:
                account = self.account(login)
                link.frozen = Frozen(self.market.server_msc(), account.account_info(self.market),
                                     account.trade_positions(self.market),
                                     {s: m.tick for s, m in self.market.symbols.items() if m.tick is not None})
            link.state = kind

    def reconnect(self, login: int) -> None:
        with self.lock:
            link = self.links[login]
            link.state, link.frozen = "up", None

    def set_algo_trading(self, login: int, enabled: bool) -> None:
        """The terminal's Algo-Trading button: off makes order_send fail with -8."""
        with self.lock:
            self.links[login].algo_trading = enabled


def follow_wall_clock(broker: SimulatedBroker, *, stop: threading.Event, speed: float = 1.0,
                      interval: float = 0.2) -> None:
    """For the live demo: keep the simulated clock in step with wall-clock time until stop is set.

    The only place the simulator reads the real clock; the model itself stays deterministic.
    """
    origin_wall, origin_sim = time.monotonic(), broker.now()
    while not stop.wait(interval):
        broker.advance_to(origin_sim + (time.monotonic() - origin_wall) * speed)
