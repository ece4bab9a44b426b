"""Reading one account's terminal: the only module of the poller that calls MT5.

Works through a ``Gateway`` (native package, mt5linux bridge or simulator alike). Every read either
returns a complete ``AccountRead`` or raises ``ReadFailed`` naming the call that failed: a partial
read is never reported, because a missing position list looks exactly like a flat account.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from producers.mt5 import constants as c
from producers.mt5.gateway import Gateway
from producers.poller.parsing import (
    FLOW_TYPES,
    Route,
    conversion_route,
    inverse_route,
    route_rate,
    tickets_to_explain,
)

#: Symbols a flat account with no conversion to do reads anyway, so its terminal's clock is still seen.
PROBE_SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD")
#: How far back the first poll looks for money flows (later polls read from the last one's time).
FLOW_LOOKBACK_SECONDS = 86_400
#: Overlap of consecutive flow reads: a deal written at the edge of a poll is read twice, not missed,
#: and each report repeats the last minute's flows (the guard applies each once).
FLOW_OVERLAP_SECONDS = 60
#: How far past our estimate of the server clock a flow read looks: until its offset is learned the
#: estimate rests on an assumed rule, and a deal written "in its future" must still be read.
FLOW_AHEAD_SECONDS = 86_400


class ReadFailed(Exception):
    """A call returned None/False, or returned something that cannot be trusted."""

    def __init__(self, stage: str, code: int, message: str) -> None:
        super().__init__(f"{stage}: {message} ({code})")
        self.stage, self.code, self.message = stage, code, message


# MT5 has no code for "connected to the terminal, but the terminal lost its trade server"; this
# borrows the package's IPC-connect code so consumers treat both as "terminal unreachable".
NOT_CONNECTED = c.RES_E_INTERNAL_FAIL_CONNECT
WRONG_ACCOUNT = c.RES_E_AUTH_FAILED
# The package's codes for a broken pipe to the terminal: only initialize() can mend those.
IPC_FAILURES = frozenset({c.RES_E_INTERNAL_FAIL, c.RES_E_INTERNAL_FAIL_SEND, c.RES_E_INTERNAL_FAIL_RECEIVE,
                          c.RES_E_INTERNAL_FAIL_CONNECT, c.RES_E_INTERNAL_FAIL_TIMEOUT})


def called(terminal: Gateway, stage: str, result: Any) -> Any:
    """``result``, or ReadFailed with the terminal's last error when the call failed (None/False)."""
    if result is None or result is False:
        code, message = _last_error(terminal)
        raise ReadFailed(stage, code, message)
    return result


def _last_error(terminal: Gateway) -> tuple[int, str]:
    try:
        code, message = terminal.last_error()
        return int(code), str(message)
    except Exception as error:  # noqa: BLE001 - a broken bridge must still yield a sync error
        return c.RES_E_FAIL, f"last_error() failed: {error}"


@dataclass
class SymbolCache:
    """Per terminal: symbol properties that do not change while it runs, and conversion routes."""

    points: dict[str, float] = field(default_factory=dict)
    digits: dict[str, int] = field(default_factory=dict)
    trade_modes: dict[str, int] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    inverses: dict[str, Route | None] = field(default_factory=dict)
    probe: str | None = None  # a symbol whose quotes show the server clock when nothing else is read
    # From the last good read, so the next can be asked for in one round trip (``send_read``):
    currency: str | None = None
    server: str | None = None
    held: tuple[str, ...] = ()

    def point(self, terminal: Gateway, symbol: str) -> float:
        if symbol not in self.points:
            info = called(terminal, "symbol_info", terminal.symbol_info(symbol))
            self.points[symbol], self.trade_modes[symbol] = info.point, info.trade_mode
            self.digits[symbol] = info.digits
        return self.points[symbol]

    def clock_probe(self, terminal: Gateway) -> str | None:
        """A quoted symbol to read the server clock from: the first of ``PROBE_SYMBOLS`` it knows."""
        if self.probe is None:
            self.probe = next((s for s in PROBE_SYMBOLS if _selectable(terminal, s)), "")
        return self.probe or None

    def route(self, terminal: Gateway, currency: str) -> Route:
        if currency not in self.routes:
            route = conversion_route(currency, lambda s: _selectable(terminal, s))
            if route is None:
                raise ReadFailed("gbp_rate", c.RES_E_NOT_FOUND, f"no symbol converts {currency} into GBP")
            self.routes[currency] = route
            self.inverses[currency] = inverse_route(route, lambda s: _selectable(terminal, s))
        return self.routes[currency]


def _selectable(terminal: Gateway, symbol: str) -> bool:
    """Whether the terminal knows the symbol; selects it into Market Watch so its ticks flow."""
    return terminal.symbol_info(symbol) is not None and bool(terminal.symbol_select(symbol, True))


@dataclass(frozen=True)
class AccountRead:
    """Everything one poll read, consistent with itself (account, positions, quotes, history)."""

    info: Any
    positions: tuple[Any, ...]
    ticks: dict[str, Any]
    points: dict[str, float]
    trade_modes: dict[str, int]
    gbp_rate: float
    deals: dict[int, tuple[Any, ...]]
    flows: tuple[Any, ...] = ()  # balance and credit deals since the last poll (server-clock window)
    digits: dict[str, int] = field(default_factory=dict)
    gbp_rate_inverse: float | None = None  # the rate through the opposite pairs, where both are quoted
    #: The server-clock seconds (first, last) the money flows were read for; None: they were not read.
    flows_window: tuple[int, int] | None = None


#: A round's quotes by (trade server, symbol): read from the first terminal of that server that needs
#: them and shared by the others (one market, one quote), so N accounts cost one read per symbol.
Quotes = dict[tuple[str, str], Any]
#: In ``Quotes``: a quote a read sent for and has not been answered yet; the reads after it wait for
#: its answer rather than ask again (and read it themselves if that read failed).
ASKED = object()


def read_account(terminal: Gateway, *, login: int, cache: SymbolCache, previous: Mapping[int, float] | None,
                 pending: Iterable[int] = (), flows_since: int | None = None, server_now: int | None = None,
                 quotes: Quotes | None = None) -> AccountRead:
    """One poll of one terminal. ``previous``: ticket -> volume at the last good poll (None: no such
    poll), so the deals of tickets that vanished or shrank since can be read in the same pass.
    ``quotes``: this round's quotes so far, shared across the terminals of one trade server.

    A terminal that can take several reads in one round trip (``send_many``: the mt5linux bridge)
    is asked for everything the last read needed in one (``send_read``, then ``finish_read``); what
    differs (a new symbol, a vanished ticket's deals) is read after, one call each. The checks and
    their order are the same either way.
    """
    quotes = {} if quotes is None else quotes
    sent = send_read(terminal, cache=cache, flows_since=flows_since, server_now=server_now, quotes=quotes)
    if sent is not None:
        return finish_read(terminal, sent, login=login, cache=cache, previous=previous, pending=pending,
                           quotes=quotes)
    status = called(terminal, "terminal_info", terminal.terminal_info())
    if not status.connected:
        raise ReadFailed("terminal_info", NOT_CONNECTED, "terminal is not connected to the trade server")
    info = _checked_login(called(terminal, "account_info", terminal.account_info()), login)
    positions = tuple(called(terminal, "positions_get", terminal.positions_get()))
    route = cache.route(terminal, info.currency)
    symbols = _symbols(terminal, cache, info.currency, positions)
    ticks = _ticks(terminal, quotes, info.server, symbols)
    priced = _priced(terminal, cache, info, ticks, route)
    deals = read_history(terminal, tickets_to_explain(previous, positions, pending))
    window = flow_window(flows_since, server_now)
    return _complete(cache, info, positions, ticks, priced, deals, read_flows(terminal, window), window)


def _checked_login(info: Any, login: int) -> Any:
    if info.login != login:
        raise ReadFailed("account_info", WRONG_ACCOUNT, f"terminal is logged into {info.login}, not {login}")
    return info


def _symbols(terminal: Gateway, cache: SymbolCache, currency: str, positions: Iterable[Any]) -> list[str]:
    """Symbols a read quotes: those held and those converting ``currency`` into GBP (or a clock probe)."""
    route, inverse = cache.routes[currency], cache.inverses.get(currency) or ()
    symbols = sorted({p.symbol for p in positions} | {leg.symbol for leg in route + inverse})
    if not symbols and (probe := cache.clock_probe(terminal)) is not None:
        symbols = [probe]
    return symbols


def _ticks(terminal: Gateway, quotes: Quotes, server: str, symbols: Iterable[str]) -> dict[str, Any]:
    """Each symbol's quote: this round's, or read now (a loop rather than a call per symbol: every poll)."""
    ticks: dict[str, Any] = {}
    for symbol in symbols:
        tick = quotes.get((server, symbol), ASKED)
        if tick is ASKED:
            tick = quotes[server, symbol] = called(terminal, "symbol_info_tick", terminal.symbol_info_tick(symbol))
        ticks[symbol] = tick
    return ticks


def _priced(terminal: Gateway, cache: SymbolCache, info: Any, ticks: dict[str, Any],
            route: Route) -> tuple[dict[str, float], float, float | None]:
    """Each quoted symbol's point, the GBP rate and the rate through the opposite pairs (if quoted)."""
    known = cache.points  # after a terminal's first reads, every symbol's: no call per symbol for it
    points = {s: known[s] if s in known else cache.point(terminal, s) for s in ticks}
    rate = route_rate(route, ticks)
    if rate is None:
        raise ReadFailed("gbp_rate", c.RES_E_FAIL, f"no usable quote to convert {info.currency} into GBP")
    inverse = cache.inverses.get(info.currency) or ()
    return points, rate, route_rate(inverse, ticks) if inverse else None


def _complete(cache: SymbolCache, info: Any, positions: tuple[Any, ...], ticks: dict[str, Any],
              priced: tuple[dict[str, float], float, float | None], deals: dict[int, tuple[Any, ...]],
              flows: tuple[Any, ...], window: dict[str, datetime] | None) -> AccountRead:
    points, rate, inverse_rate = priced
    cache.currency, cache.server, cache.held = info.currency, info.server, tuple(sorted({p.symbol for p in positions}))
    covered = None if window is None else (int(window["date_from"].timestamp()), int(window["date_to"].timestamp()))
    return AccountRead(info, positions, ticks, points, dict(cache.trade_modes), rate, deals, flows,
                       dict(cache.digits), inverse_rate, covered)


@dataclass(frozen=True)
class SentRead:
    """A read's one request, on its way to the terminal (``send_read``)."""

    server: str
    symbols: tuple[str, ...]  # the quotes asked for
    window: dict[str, datetime] | None  # of the money flows asked for
    answers: Callable[[], list[tuple[Any, tuple[int, str] | None]]]


def send_read(terminal: Gateway, *, cache: SymbolCache, flows_since: int | None, server_now: int | None,
              quotes: Quotes) -> SentRead | None:
    """Everything the last read of this terminal needed, asked in one request that is not waited for
    (so a round can have one in flight to every terminal at once); None when the terminal cannot take
    one (not a bridge) or there was no good read yet. ``finish_read`` waits for its answers."""
    send = getattr(terminal, "send_many", None)
    if send is None or cache.currency not in cache.routes or cache.server is None:
        return None
    server = cache.server
    symbols = tuple(s for s in _symbols(terminal, cache, cache.currency, [_Held(s) for s in cache.held])
                    if (server, s) not in quotes)
    quotes.update(((server, s), ASKED) for s in symbols)
    window = flow_window(flows_since, server_now)
    plan: list[tuple[str, dict[str, Any]]] = [("terminal_info", {}), ("account_info", {}), ("positions_get", {})]
    plan += [("symbol_info_tick", {"symbol": s}) for s in symbols]
    plan += [("history_deals_get", window)] if window else []
    return SentRead(server, symbols, window, send(plan))


def finish_read(terminal: Gateway, sent: SentRead, *, login: int, cache: SymbolCache,
                previous: Mapping[int, float] | None, pending: Iterable[int], quotes: Quotes) -> AccountRead:
    """``read_account`` from the answers of ``send_read``'s request (and single calls for what it lacked)."""
    answers = iter(sent.answers())

    def answer(stage: str) -> Any:
        value, error = next(answers)
        if value is None or value is False:
            code, message = error or (c.RES_E_FAIL, "no error reported")
            raise ReadFailed(stage, int(code), str(message))
        return value

    status = answer("terminal_info")
    if not status.connected:
        raise ReadFailed("terminal_info", NOT_CONNECTED, "terminal is not connected to the trade server")
    info = _checked_login(answer("account_info"), login)
    positions = tuple(answer("positions_get"))
    fetched = {s: answer("symbol_info_tick") for s in sent.symbols}
    deals_in_window = answer("history_deals_get") if sent.window else ()
    if info.server != sent.server:  # the terminal moved to another trade server: its quotes are not these
        quotes = {}
    else:
        quotes.update(((sent.server, s), tick) for s, tick in fetched.items())
    route = cache.route(terminal, info.currency)
    ticks = _ticks(terminal, quotes, info.server, _symbols(terminal, cache, info.currency, positions))
    priced = _priced(terminal, cache, info, ticks, route)
    deals = read_history(terminal, tickets_to_explain(previous, positions, pending))
    return _complete(cache, info, positions, ticks, priced, deals,
                     tuple(d for d in deals_in_window if d.type in FLOW_TYPES), sent.window)


@dataclass(frozen=True)
class _Held:
    symbol: str


def flow_window(since: int | None, server_now: int | None) -> dict[str, datetime] | None:
    """The history_deals_get dates of a read of money flows (None: no clock to read them by yet). From
    the last read's time (or a day back on a first read), or from now when a learned offset moved the
    clock back past it; to a day ahead of now, so a clock not learned yet misses nothing."""
    if server_now is None:
        return None
    start = server_now - FLOW_LOOKBACK_SECONDS if since is None else min(since, server_now) - FLOW_OVERLAP_SECONDS
    return {"date_from": datetime.fromtimestamp(start, UTC),
            "date_to": datetime.fromtimestamp(server_now + FLOW_AHEAD_SECONDS, UTC)}


def read_flows(terminal: Gateway, window: dict[str, datetime] | None) -> tuple[Any, ...]:
    """Deposits, withdrawals, credit and bonus deals written in ``window`` (``flow_window``)."""
    if window is None:
        return ()
    deals = called(terminal, "history_deals_get", terminal.history_deals_get(**window))
    return tuple(d for d in deals if d.type in FLOW_TYPES)


def read_history(terminal: Gateway, tickets: Sequence[int]) -> dict[int, tuple[Any, ...]]:
    """Each ticket's deals (by position id); an empty tuple when the terminal has none yet."""
    return {t: tuple(called(terminal, "history_deals_get", terminal.history_deals_get(position=t)))
            for t in tickets}
