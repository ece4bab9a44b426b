"""Accounts of the simulated broker: open positions, deal and order history, and the money arithmetic.

Profit and margin are computed in the symbol's currency and converted into the account currency at the
market model's current quotes, as MT5 does. An account's derived figures (profit, equity, margin, the
TradePosition tuples) are computed once per market revision and account revision and then served from
that snapshot, so the poller can read a thousand accounts a second without recomputing anything.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from producers.mt5 import constants as c
from producers.mt5.simulator.market import MarketModel, SymbolSpec
from producers.mt5.types import AccountInfo, TradeDeal, TradeOrder, TradePosition, new_record

VOLUME_EPSILON = 1e-8


@dataclass(slots=True)
class Position:
    """An open position as the server holds it; TradePosition is built from it on read."""

    ticket: int
    symbol: str
    type: int
    volume: float
    price_open: float
    sl: float
    tp: float
    magic: int
    comment: str
    reason: int
    time_msc: int
    time_update_msc: int

    @property
    def close_deal_type(self) -> int:
        return c.DEAL_TYPE_SELL if self.type == c.POSITION_TYPE_BUY else c.DEAL_TYPE_BUY


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An account's derived figures at one (market revision, account revision)."""

    key: tuple[int, int]
    profit: float
    margin: float
    profits: dict[int, float]  # position ticket -> floating profit in the account currency

    def equity(self, balance: float, credit: float) -> float:
        return round(balance + credit + self.profit, 2)


@dataclass(slots=True)
class Account:
    login: int
    password: str
    server: str
    currency: str
    balance: float
    leverage: int
    margin_so_call: float
    margin_so_so: float
    name: str
    company: str
    trade_mode: int
    credit: float = 0.0
    positions: dict[int, Position] = field(default_factory=dict)
    closed_positions: set[int] = field(default_factory=set)
    deals: list[TradeDeal] = field(default_factory=list)
    deal_times: list[int] = field(default_factory=list)
    orders: list[TradeOrder] = field(default_factory=list)
    order_times: list[int] = field(default_factory=list)
    revision: int = 0
    _snapshot: Snapshot | None = None
    _positions_view: tuple[tuple[int, int], tuple[TradePosition, ...]] | None = None
    _info_view: tuple[tuple[int, int], AccountInfo] | None = None

    # -- history --------------------------------------------------------------------------------

    def add_deal(self, deal: TradeDeal) -> None:
        self.deals.append(deal)
        self.deal_times.append(deal.time)
        self.revision += 1

    def add_order(self, order: TradeOrder) -> None:
        self.orders.append(order)
        self.order_times.append(order.time_done)
        self.revision += 1

    def deals_between(self, date_from: int, date_to: int) -> list[TradeDeal]:
        lo, hi = bisect.bisect_left(self.deal_times, date_from), bisect.bisect_right(self.deal_times, date_to)
        return self.deals[lo:hi]

    def orders_between(self, date_from: int, date_to: int) -> list[TradeOrder]:
        lo, hi = bisect.bisect_left(self.order_times, date_from), bisect.bisect_right(self.order_times, date_to)
        return self.orders[lo:hi]

    # -- derived figures ----------------------------------------------------------------------------

    def snapshot(self, market: MarketModel) -> Snapshot:
        key = (market.revision, self.revision)
        if self._snapshot is None or self._snapshot.key != key:
            self._snapshot = compute_snapshot(self, market, key)
        return self._snapshot

    def margin_level(self, snap: Snapshot) -> float:
        return round(snap.equity(self.balance, self.credit) / snap.margin * 100, 2) if snap.margin else 0.0

    def account_info(self, market: MarketModel) -> AccountInfo:
        key = (market.revision, self.revision)
        if self._info_view is None or self._info_view[0] != key:
            self._info_view = (key, build_account_info(self, self.snapshot(market)))
        return self._info_view[1]

    def trade_positions(self, market: MarketModel) -> tuple[TradePosition, ...]:
        key = (market.revision, self.revision)
        if self._positions_view is None or self._positions_view[0] != key:
            profits = self.snapshot(market).profits
            view = tuple([build_position(p, market, profits[p.ticket]) for p in self.positions.values()])
            self._positions_view = (key, view)
        return self._positions_view[1]


def position_price(market: MarketModel, symbol: str, position_type: int) -> float:
    """The price a position would close at now: a buy sells at bid, a sell buys at ask."""
    quote = market.symbols[symbol]
    return quote.bid if position_type == c.POSITION_TYPE_BUY else quote.ask


def raw_profit(spec: SymbolSpec, position_type: int, volume: float, price_open: float, price_close: float) -> float:
    """Profit in the symbol's profit currency (forex and CFD formulas are the same: price delta x size)."""
    sign = 1.0 if position_type == c.POSITION_TYPE_BUY else -1.0
    return sign * (price_close - price_open) * spec.contract_size * volume


def raw_margin(spec: SymbolSpec, volume: float, price: float, leverage: int) -> float:
    """Margin in the symbol's margin currency, per MT5's calculation mode."""
    mode = spec.calc_mode
    if mode == c.SYMBOL_CALC_MODE_FOREX:
        return volume * spec.contract_size / leverage
    if mode == c.SYMBOL_CALC_MODE_FOREX_NO_LEVERAGE:
        return volume * spec.contract_size
    if mode == c.SYMBOL_CALC_MODE_CFDLEVERAGE:
        return volume * spec.contract_size * price / leverage
    return volume * spec.contract_size * price  # CFD and the exchange modes: no leverage


def profit_in(account_ccy: str, market: MarketModel, spec: SymbolSpec, position_type: int,
              volume: float, price_open: float, price_close: float) -> float:
    raw = raw_profit(spec, position_type, volume, price_open, price_close)
    return round(raw * market.rate(spec.currency_profit, account_ccy), 2)


def margin_in(account_ccy: str, market: MarketModel, spec: SymbolSpec, position_type: int,
              volume: float, leverage: int) -> float:
    price = market.symbols[spec.name].ask if position_type == c.POSITION_TYPE_BUY else market.symbols[spec.name].bid
    return raw_margin(spec, volume, price, leverage) * market.rate(spec.currency_margin, account_ccy)


def hedged_margin(legs: dict[str, list[float]]) -> float:
    """Hedged positions on one symbol need margin for the larger leg only (margin_hedged_use_leg)."""
    return round(float(sum(map(max, legs.values()))), 2)  # each leg is [buy, sell]; map: no generator to resume


def margin_legs(account: Account, market: MarketModel,
                extra: tuple[str, int, float] | None = None) -> dict[str, list[float]]:
    """Per symbol, the [buy, sell] margin of the open positions, plus an optional (symbol, type, volume)."""
    legs: dict[str, list[float]] = {}
    items = [(p.symbol, p.type, p.volume) for p in account.positions.values()]
    for symbol, position_type, volume in items + ([extra] if extra else []):
        spec = market.symbols[symbol].spec
        leg = legs.setdefault(symbol, [0.0, 0.0])
        leg[position_type] += margin_in(account.currency, market, spec, position_type, volume, account.leverage)
    return legs


def compute_snapshot(account: Account, market: MarketModel, key: tuple[int, int]) -> Snapshot:
    """Profit per position and the hedged margin, in one pass over the positions: the stop-out check
    asks for this after every tick step of every account that holds a position. The arithmetic (and the
    order of its sums) is ``profit_in``'s and ``margin_legs``'s, so the figures are theirs to the bit."""
    ccy, leverage, symbols = account.currency, account.leverage, market.symbols
    rates = {ccy: 1.0}  # market.rate(x, ccy) per currency x: fixed at one market revision, so asked once
    profits: dict[int, float] = {}
    legs: dict[str, list[float]] = {}
    for p in account.positions.values():
        quote = symbols[p.symbol]
        spec = quote.spec
        if p.type == c.POSITION_TYPE_BUY:
            closes_at, opens_at = quote.bid, quote.ask
        else:
            closes_at, opens_at = quote.ask, quote.bid
        raw = raw_profit(spec, p.type, p.volume, p.price_open, closes_at)
        if (profit_rate := rates.get(spec.currency_profit)) is None:
            profit_rate = rates[spec.currency_profit] = market.rate(spec.currency_profit, ccy)
        profits[p.ticket] = round(raw * profit_rate, 2)
        leg = legs.get(p.symbol)
        if leg is None:
            leg = legs[p.symbol] = [0.0, 0.0]
        if (margin_rate := rates.get(spec.currency_margin)) is None:
            margin_rate = rates[spec.currency_margin] = market.rate(spec.currency_margin, ccy)
        leg[p.type] += raw_margin(spec, p.volume, opens_at, leverage) * margin_rate
    return Snapshot(key, round(float(sum(profits.values())), 2), hedged_margin(legs), profits)


def build_position(p: Position, market: MarketModel, profit: float) -> TradePosition:
    price_current = position_price(market, p.symbol, p.type)
    return new_record(TradePosition, (  # type: ignore[no-any-return]
        p.ticket, p.time_msc // 1000, p.time_msc, p.time_update_msc // 1000, p.time_update_msc,  # ticket, times
        p.type, p.magic, p.ticket, p.reason,  # type, magic, identifier, reason
        p.volume, p.price_open, p.sl, p.tp, price_current, 0.0, profit,  # ..., price_current, swap, profit
        p.symbol, p.comment, ""))  # symbol, comment, external_id


def build_account_info(a: Account, snap: Snapshot) -> AccountInfo:
    equity = snap.equity(a.balance, a.credit)
    return new_record(AccountInfo, (  # type: ignore[no-any-return]
        a.login, a.trade_mode, a.leverage, 200, c.ACCOUNT_STOPOUT_MODE_PERCENT,  # ..., limit_orders, so_mode
        True, True, c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING, 2, False,  # trade_allowed/expert, margin_mode, ...
        a.balance, a.credit, snap.profit, equity, snap.margin,
        round(equity - snap.margin, 2), a.margin_level(snap),  # margin_free, margin_level
        a.margin_so_call, a.margin_so_so, 0.0, 0.0, 0.0, 0.0, 0.0,  # ..., initial, maintenance, assets, ...
        a.name, a.server, a.currency, a.company))
