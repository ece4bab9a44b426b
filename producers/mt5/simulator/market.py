"""Market model of the simulated broker: symbols, trading sessions, price paths, ticks and bars.

Deterministic by construction: each symbol draws its path from its own ``random.Random`` seeded with
(seed, symbol) and its market faults from a second one, and the only clock is the simulated one in
milliseconds. So adding a symbol, an account or a fault knob never shifts another symbol's prices.

Two clocks, as on a real broker: the model runs on true UTC (``clock_msc``), and everything it
records (ticks, bars, deals, orders, positions) is stamped with the broker's server clock
(``server_msc``: by default UTC+2, UTC+3 while New York keeps summer time), which MT5 writes as if it
were UTC. Sessions follow the market calendar of ``infra/sessions.py`` (the guard's own), so a
closed market has no ticks and refuses trades with 10018.
"""

from __future__ import annotations

import bisect
import calendar
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from infra import sessions
from infra.brokerclock import rule_offset_minutes
from infra.settings.markets import NEW_YORK_CLOSE, MarketSettings
from producers.mt5 import constants as c
from producers.mt5.simulator.faults import FaultConfig
from producers.mt5.types import Tick, new_record

# The packed 60-byte records copy_ticks_* / copy_rates_* return (reference section 7).
TICK_DTYPE = np.dtype([("time", "<i8"), ("bid", "<f8"), ("ask", "<f8"), ("last", "<f8"),
                       ("volume", "<u8"), ("time_msc", "<i8"), ("flags", "<u4"), ("volume_real", "<f8")])
RATE_DTYPE = np.dtype([("time", "<i8"), ("open", "<f8"), ("high", "<f8"), ("low", "<f8"),
                       ("close", "<f8"), ("tick_volume", "<u8"), ("spread", "<i4"), ("real_volume", "<u8")])

# SymbolInfo.filling_mode bits. MQL5 values: the package itself defines no constants for them.
FILLING_FOK = 1
FILLING_IOC = 2

_HOUR = 3600
_DAY = 86400


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """What a broker configures for one instrument, plus the parameters of its simulated path."""

    name: str
    description: str
    category: str
    digits: int
    contract_size: float
    currency_base: str
    currency_profit: str
    currency_margin: str
    start_bid: float
    spread_points: int
    volatility_per_hour: float  # stdev of the relative price change over one hour
    calc_mode: int = c.SYMBOL_CALC_MODE_FOREX
    exemode: int = c.SYMBOL_TRADE_EXECUTION_INSTANT
    filling_mode: int = FILLING_FOK | FILLING_IOC
    trade_mode: int = c.SYMBOL_TRADE_MODE_FULL
    stops_level: int = 0
    volume_min: float = 0.01
    volume_max: float = 100.0
    volume_step: float = 0.01
    session_gap_pct: float = 0.05  # stdev of the jump at each session open, in percent

    @property
    def point(self) -> float:
        return round(10.0 ** -self.digits, self.digits)


DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec("EURUSD", "Euro vs US Dollar", "Forex", 5, 100_000.0, "EUR", "USD", "EUR",
               1.09500, 12, 0.0012, stops_level=10),
    SymbolSpec("GBPUSD", "Great Britain Pound vs US Dollar", "Forex", 5, 100_000.0, "GBP", "USD", "GBP",
               1.27000, 15, 0.0015, stops_level=10),
    SymbolSpec("USDJPY", "US Dollar vs Japanese Yen", "Forex", 3, 100_000.0, "USD", "JPY", "USD",
               145.000, 14, 0.0013, stops_level=10),
    SymbolSpec("EURGBP", "Euro vs Great Britain Pound", "Forex", 5, 100_000.0, "EUR", "GBP", "EUR",
               0.86220, 16, 0.0008, stops_level=10),
    SymbolSpec("XAUUSD", "Gold vs US Dollar", "Metals", 2, 100.0, "XAU", "USD", "USD",
               2030.00, 25, 0.0030, calc_mode=c.SYMBOL_CALC_MODE_CFDLEVERAGE,
               exemode=c.SYMBOL_TRADE_EXECUTION_MARKET, filling_mode=FILLING_IOC, stops_level=50,
               volume_max=50.0, session_gap_pct=0.3),
    SymbolSpec("US30", "Wall Street 30 Index", "Indices", 2, 1.0, "USD", "USD", "USD",
               37500.00, 300, 0.0030, calc_mode=c.SYMBOL_CALC_MODE_CFDLEVERAGE,
               exemode=c.SYMBOL_TRADE_EXECUTION_MARKET, filling_mode=FILLING_FOK, stops_level=500,
               volume_min=0.1, volume_max=50.0, volume_step=0.1, session_gap_pct=0.5),
)


class Sessions:
    """The market calendar, asked once per symbol and minute (sessions change on whole minutes)."""

    def __init__(self, markets: MarketSettings) -> None:
        self.markets = markets
        self._minute: dict[str, tuple[int, bool]] = {}

    def is_open(self, symbol: str, t: int) -> bool:
        """Whether the symbol trades at true epoch second t."""
        minute = t // 60
        known = self._minute.get(symbol)
        if known is None or known[0] != minute:
            known = self._minute[symbol] = (minute, sessions.is_open(
                self.markets, symbol, datetime.fromtimestamp(minute * 60, UTC)))
        return known[1]


class SymbolMarket:
    """One symbol's live state and recorded history (ticks and M1 bars, both oldest first)."""

    def __init__(self, spec: SymbolSpec, seed: int | str, *, max_ticks: int,
                 to_server: Callable[[int], int] = lambda t: t) -> None:
        self.spec = spec
        self._to_server = to_server
        self.point = spec.point
        self._rng = random.Random(f"{seed}:price:{spec.name}")
        self._fault_rng = random.Random(f"{seed}:market-faults:{spec.name}")
        self._mid = spec.start_bid
        self._widen_left = 0
        self._widen_factor = 1.0
        self._was_open = True
        self._max_ticks = max_ticks
        self.bid = 0.0
        self.ask = 0.0
        self.spread = spec.spread_points
        self.tick: Tick | None = None
        self.times_msc: list[int] = []
        self.rows: list[tuple[int, float, float, float, int, int, int, float]] = []
        self.m1_times: list[int] = []
        self.m1: list[list[float | int]] = []
        self.day_stats: tuple[int, float, float, float, float, float] = (0, 0.0, 0.0, 0.0, 0.0, 0.0)

    # -- moving the price -------------------------------------------------------------------------

    def step(self, t_msc: int, dt: float, faults: FaultConfig, *, calendar: Sessions | None) -> bool:
        """Move one tick interval forward; True when a tick (a bid or ask change) was recorded."""
        if calendar is not None and not calendar.is_open(self.spec.name, t_msc // 1000):
            self._was_open = False
            return False
        if not self._was_open:  # the first quote after a closed period opens with a gap
            self._mid *= math.exp(self._rng.gauss(0.0, self.spec.session_gap_pct / 100))
            self._was_open = True
        self._mid *= math.exp(self._rng.gauss(0.0, self.spec.volatility_per_hour * math.sqrt(dt / _HOUR)))
        if self._widen_left or faults.gap_probability or faults.spread_widen_probability:  # else nothing to do
            self._apply_faults(faults)
        jitter = 0.8 + 0.4 * self._rng.random()  # spreads float a little on every tick
        self.spread = max(1, round(self.spec.spread_points * jitter * self._widen_factor))
        return self._record(t_msc)

    def _apply_faults(self, faults: FaultConfig) -> None:
        rng = self._fault_rng
        if faults.gap_probability and rng.random() < faults.gap_probability:
            self._mid *= 1 + rng.uniform(-faults.gap_max_pct, faults.gap_max_pct) / 100
        if self._widen_left > 0:
            self._widen_left -= 1
            self._widen_factor = 1.0 if self._widen_left == 0 else self._widen_factor
        elif faults.spread_widen_probability and rng.random() < faults.spread_widen_probability:
            self.widen(faults.spread_widen_factor, faults.spread_widen_ticks)

    def mark_closed(self) -> None:
        self._was_open = False

    def widen(self, factor: float, ticks: int) -> None:
        self._widen_factor, self._widen_left = factor, ticks

    def jump(self, t_msc: int, pct: float, *, record: bool) -> bool:
        """Shift the price by pct percent at once (a gap); recorded as a tick when the market is open."""
        self._mid *= 1 + pct / 100
        return self._record(t_msc) if record else False

    def set_quote(self, t_msc: int, bid: float, ask: float | None) -> bool:
        self._mid = bid
        if ask is not None:
            self.spread = max(0, round((ask - bid) / self.point))
        return self._record(t_msc)

    # -- recording --------------------------------------------------------------------------------

    def _record(self, true_msc: int) -> bool:
        t_msc = self._to_server(true_msc)  # what MT5 writes: the server clock
        digits = self.spec.digits
        bid = round(self._mid, digits)
        ask = round(bid + self.spread * self.point, digits)
        flags = (c.TICK_FLAG_BID if bid != self.bid else 0) | (c.TICK_FLAG_ASK if ask != self.ask else 0)
        if not flags:  # MT5 sends no tick when neither side moved
            return False
        self.bid, self.ask = bid, ask
        t = t_msc // 1000
        row = (t, bid, ask, 0.0, 0, t_msc, flags, 0.0)
        self.tick = new_record(Tick, row)
        self.times_msc.append(t_msc)
        self.rows.append(row)
        if len(self.rows) > self._max_ticks:  # "max bars in chart": old history falls off
            del self.rows[: self._max_ticks // 2], self.times_msc[: self._max_ticks // 2]
        self._update_m1(t, bid, ask)
        self._update_day(t, bid, ask)
        return True

    def _update_m1(self, t: int, bid: float, ask: float) -> None:
        minute = t - t % 60
        spread = round((ask - bid) / self.point)
        if self.m1_times and self.m1_times[-1] == minute:
            bar = self.m1[-1]
            bar[2], bar[3], bar[4] = max(bar[2], bid), min(bar[3], bid), bid
            bar[5] += 1
            bar[6] = min(bar[6], spread)  # MT5 bars keep the smallest spread seen in the bar
            return
        self.m1_times.append(minute)
        self.m1.append([minute, bid, bid, bid, bid, 1, spread, 0])

    def _update_day(self, t: int, bid: float, ask: float) -> None:
        day, opened, bid_hi, bid_lo, ask_hi, ask_lo = self.day_stats
        if t // _DAY != day:
            self.day_stats = (t // _DAY, bid, bid, bid, ask, ask)
            return
        self.day_stats = (day, opened, max(bid_hi, bid), min(bid_lo, bid), max(ask_hi, ask), min(ask_lo, ask))

    # -- reading history ----------------------------------------------------------------------------

    def ticks_from(self, from_msc: int, count: int, flags: int) -> np.ndarray:
        start = bisect.bisect_left(self.times_msc, from_msc)
        picked: list[tuple[int, float, float, float, int, int, int, float]] = []
        for row in self.rows[start:]:
            if len(picked) >= count:
                break
            if _tick_matches(row[6], flags):
                picked.append(row)
        return np.array(picked, dtype=TICK_DTYPE)

    def ticks_range(self, from_msc: int, to_msc: int, flags: int) -> np.ndarray:
        lo = bisect.bisect_left(self.times_msc, from_msc)
        hi = bisect.bisect_right(self.times_msc, to_msc)
        return np.array([r for r in self.rows[lo:hi] if _tick_matches(r[6], flags)], dtype=TICK_DTYPE)

    def rates_from(self, timeframe: int, date_from: int, count: int) -> np.ndarray:
        cut = bisect.bisect_right(self.m1_times, date_from, key=lambda t: bar_open(timeframe, t))
        bars = aggregate(self.m1[:cut], timeframe)
        return np.array(bars[max(0, len(bars) - count):] if count > 0 else [], dtype=RATE_DTYPE)

    def rates_from_pos(self, timeframe: int, start_pos: int, count: int) -> np.ndarray:
        bars = aggregate(self.m1, timeframe)
        end = len(bars) - max(0, start_pos)  # position 0 is the bar still forming
        return np.array(bars[max(0, end - count):max(0, end)] if count > 0 else [], dtype=RATE_DTYPE)

    def rates_range(self, timeframe: int, date_from: int, date_to: int) -> np.ndarray:
        lo = bisect.bisect_left(self.m1_times, date_from, key=lambda t: bar_open(timeframe, t))
        hi = bisect.bisect_right(self.m1_times, date_to, key=lambda t: bar_open(timeframe, t))
        return np.array(aggregate(self.m1[lo:hi], timeframe), dtype=RATE_DTYPE)


def _tick_matches(tick_flags: int, flags: int) -> bool:
    if flags == c.COPY_TICKS_INFO:
        return bool(tick_flags & (c.TICK_FLAG_BID | c.TICK_FLAG_ASK))
    if flags == c.COPY_TICKS_TRADE:
        return bool(tick_flags & (c.TICK_FLAG_LAST | c.TICK_FLAG_VOLUME))
    return True


TIMEFRAMES: frozenset[int] = frozenset(v for k, v in vars(c).items() if k.startswith("TIMEFRAME_"))


def bar_open(timeframe: int, t: int) -> int:
    """Open time of the bar of this timeframe that contains epoch second t (weeks start on Sunday)."""
    if timeframe == c.TIMEFRAME_MN1:
        d = datetime.fromtimestamp(t, tz=UTC)
        return calendar.timegm((d.year, d.month, 1, 0, 0, 0))
    if timeframe == c.TIMEFRAME_W1:
        day = t // _DAY
        return (day - (day + 4) % 7) * _DAY
    seconds = (timeframe & 0x3FFF) * _HOUR if timeframe & 0x4000 else timeframe * 60
    return t - t % seconds


def aggregate(m1: list[list[float | int]], timeframe: int) -> list[tuple[int, float, float, float, float, int, int, int]]:
    """Fold M1 bars (oldest first) into bars of the timeframe."""
    bars: list[list[float | int]] = []
    for time, op, high, low, close, ticks, spread, real in m1:
        start = bar_open(timeframe, int(time))
        if bars and bars[-1][0] == start:
            bar = bars[-1]
            bar[2], bar[3], bar[4] = max(bar[2], high), min(bar[3], low), close
            bar[5] += ticks
            bar[6] = min(bar[6], spread)
        else:
            bars.append([start, op, high, low, close, ticks, spread, real])
    return [tuple(b) for b in bars]  # type: ignore[misc]


class MarketModel:
    """All symbols, the simulated clock, and currency conversion at the model's own quotes."""

    def __init__(self, seed: int | str, specs: tuple[SymbolSpec, ...], *, start_msc: int,
                 tick_interval: float, sessions: bool, max_ticks: int, markets: MarketSettings | None = None,
                 server_clock: str = NEW_YORK_CLOSE) -> None:
        self.server_clock = server_clock
        self.symbols = {s.name: SymbolMarket(s, seed, max_ticks=max_ticks, to_server=self.server_msc)
                        for s in specs}
        self.clock_msc = start_msc
        self.step_msc = max(1, round(tick_interval * 1000))
        self.sessions = sessions
        self.calendar = Sessions(markets or MarketSettings()) if sessions else None
        self._offset: tuple[int, int] = (-1, 0)  # (true minute, server offset in ms) last computed
        self.revision = 0
        self._next_tick_msc = start_msc + self.step_msc
        self._pairs = {(s.currency_base, s.currency_profit): self.symbols[s.name]
                       for s in specs if s.currency_base != s.currency_profit}
        self._rates: dict[tuple[str, str], float] = {}
        self._rates_revision = -1
        for market in self.symbols.values():  # every symbol starts with a last known quote
            market.set_quote(start_msc, market.spec.start_bid, None)

    def steps_until(self, target_msc: int, faults: FaultConfig) -> Iterator[list[SymbolMarket]]:
        """Advance the clock tick interval by tick interval; yield the symbols that ticked at each step."""
        dt = self.step_msc / 1000
        while self._next_tick_msc <= target_msc:
            if self._skip_closed_minute():
                continue
            self.clock_msc = self._next_tick_msc
            self._next_tick_msc += self.step_msc
            ticked = [m for m in self.symbols.values()
                      if m.step(self.clock_msc, dt, faults, calendar=self.calendar)]
            if ticked:
                self.revision += 1
                yield ticked
        self.clock_msc = max(self.clock_msc, target_msc)

    def _skip_closed_minute(self) -> bool:
        """With every market shut (weekends), jump to the next minute: sessions change on whole minutes,
        and stepping through a weekend tick by tick would cost seconds of CPU for nothing."""
        t = self._next_tick_msc
        calendar = self.calendar
        if calendar is None or any(calendar.is_open(name, t // 1000) for name in self.symbols):
            return False
        for market in self.symbols.values():
            market.mark_closed()
        minute_end = (t // 60_000 + 1) * 60_000
        self._next_tick_msc = t + -(-(minute_end - t) // self.step_msc) * self.step_msc
        self.clock_msc = t
        return True

    def is_open(self, symbol: str) -> bool:
        return self.calendar is None or self.calendar.is_open(symbol, self.clock_msc // 1000)

    def server_msc(self, true_msc: int | None = None) -> int:
        """The server clock (ms, written as UTC) at a true time, by default now."""
        t = self.clock_msc if true_msc is None else true_msc
        minute = t // 60_000
        if self._offset[0] != minute:
            at = datetime.fromtimestamp(minute * 60, UTC)
            self._offset = (minute, rule_offset_minutes(self.server_clock, at) * 60_000)
        return t + self._offset[1]

    def touched(self) -> None:
        """A hook changed a quote outside the regular steps."""
        self.revision += 1

    def rate(self, from_ccy: str, to_ccy: str) -> float:
        """Units of to_ccy per unit of from_ccy: a direct pair at bid, an inverse one at 1/ask, else via USD."""
        if from_ccy == to_ccy:
            return 1.0
        if self._rates_revision != self.revision:
            self._rates, self._rates_revision = {}, self.revision
        key = (from_ccy, to_ccy)
        if key not in self._rates:
            direct = self._direct(from_ccy, to_ccy)
            if direct is None:
                to_usd, from_usd = self._direct(from_ccy, "USD"), self._direct("USD", to_ccy)
                if to_usd is None or from_usd is None:
                    raise KeyError(f"no symbol converts {from_ccy} into {to_ccy}")
                direct = to_usd * from_usd
            self._rates[key] = direct
        return self._rates[key]

    def _direct(self, from_ccy: str, to_ccy: str) -> float | None:
        if from_ccy == to_ccy:
            return 1.0
        if (market := self._pairs.get((from_ccy, to_ccy))) is not None:
            return market.bid
        if (market := self._pairs.get((to_ccy, from_ccy))) is not None:
            return 1.0 / market.ask
        return None
