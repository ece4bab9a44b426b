"""The simulated trade server: checks and executes trade requests, triggers SL/TP, enforces stop-out.

Accounts are hedging accounts (margin_mode 2): a DEAL naming ``position`` with the opposite type closes
that position fully or partly and can never open one; a DEAL without ``position`` opens a new position.
A refused request raises Rejected inside the server and comes out as an OrderSendResult carrying the
server's retcode, as on a real server (order_send returns None only when no answer arrives).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from producers.mt5 import constants as c
from producers.mt5.simulator.accounts import (
    VOLUME_EPSILON,
    Account,
    Position,
    hedged_margin,
    margin_legs,
    position_price,
    profit_in,
)
from producers.mt5.simulator.faults import FaultConfig
from producers.mt5.simulator.market import FILLING_FOK, FILLING_IOC, MarketModel, SymbolMarket, SymbolSpec
from producers.mt5.types import OrderCheckResult, OrderSendResult, TradeDeal, TradeOrder, TradeRequest

RETCODE_COMMENTS: dict[int, str] = {
    c.TRADE_RETCODE_REQUOTE: "Requote",
    c.TRADE_RETCODE_DONE: "Request executed",
    c.TRADE_RETCODE_INVALID: "Invalid request",
    c.TRADE_RETCODE_INVALID_VOLUME: "Invalid volume",
    c.TRADE_RETCODE_INVALID_PRICE: "Invalid price",
    c.TRADE_RETCODE_INVALID_STOPS: "Invalid stops",
    c.TRADE_RETCODE_TRADE_DISABLED: "Trade disabled",
    c.TRADE_RETCODE_MARKET_CLOSED: "Market closed",
    c.TRADE_RETCODE_NO_MONEY: "No money",
    c.TRADE_RETCODE_PRICE_OFF: "No prices",
    c.TRADE_RETCODE_NO_CHANGES: "No changes",
    c.TRADE_RETCODE_INVALID_FILL: "Unsupported filling mode",
    c.TRADE_RETCODE_CONNECTION: "No connection",
    c.TRADE_RETCODE_INVALID_ORDER: "Invalid order",
    c.TRADE_RETCODE_POSITION_CLOSED: "Position already closed",
    c.TRADE_RETCODE_INVALID_CLOSE_VOLUME: "Invalid close volume",
    c.TRADE_RETCODE_LONG_ONLY: "Long positions only allowed",
    c.TRADE_RETCODE_SHORT_ONLY: "Short positions only allowed",
    c.TRADE_RETCODE_CLOSE_ONLY: "Close only allowed",
}
_INSTANT_MODES = (c.SYMBOL_TRADE_EXECUTION_REQUEST, c.SYMBOL_TRADE_EXECUTION_INSTANT)


class Rejected(Exception):
    def __init__(self, retcode: int) -> None:
        super().__init__(retcode)
        self.retcode = retcode


@dataclass(frozen=True, slots=True)
class Plan:
    """A request that passed the server's checks: what it will do."""

    kind: str  # "open" | "close" | "sltp" | "close_by"
    spec: SymbolSpec
    position: Position | None = None
    opposite: Position | None = None


class TradeServer:
    def __init__(self, market: MarketModel) -> None:
        self.market = market
        self.accounts: dict[int, Account] = {}
        self._next_order = 100_000_000
        self._next_deal = 50_000_000
        self._by_symbol: dict[str, dict[int, tuple[Account, Position]]] = {s: {} for s in market.symbols}
        self._exposed: dict[int, Account] = {}  # accounts holding at least one position

    # -- entry points ------------------------------------------------------------------------------

    def send(self, account: Account, req: TradeRequest, *, reason: int, request_id: int,
             faults: FaultConfig | None = None, rng: random.Random | None = None) -> OrderSendResult:
        try:
            plan = self.plan(account, req)
            if plan.kind == "sltp":
                return self._modify(account, plan, req, request_id)
            if plan.kind == "close_by":
                return self._close_by(account, plan, req, request_id)
            price = self._fill_price(plan.spec, req, faults or FaultConfig(), rng or random.Random(0))
            return self._execute(account, plan, req, price, reason, request_id)
        except Rejected as refused:
            return self.rejected(req, refused.retcode, request_id)

    def check(self, account: Account, req: TradeRequest) -> OrderCheckResult:
        snap = account.snapshot(self.market)
        equity = snap.equity(account.balance, account.credit)
        try:
            plan = self.plan(account, req)
        except Rejected as refused:
            return OrderCheckResult(refused.retcode, account.balance, equity, snap.profit, snap.margin,
                                    round(equity - snap.margin, 2), account.margin_level(snap),
                                    RETCODE_COMMENTS.get(refused.retcode, "Rejected"), req)
        margin = snap.margin
        if plan.kind == "open":
            margin = hedged_margin(margin_legs(account, self.market, (req.symbol, req.type, req.volume)))
        level = round(equity / margin * 100, 2) if margin else 0.0
        return OrderCheckResult(0, account.balance, equity, snap.profit, margin, round(equity - margin, 2),
                                level, "Done", req)

    def rejected(self, req: TradeRequest, retcode: int, request_id: int) -> OrderSendResult:
        quote = self.market.symbols.get(req.symbol)
        bid, ask = (quote.bid, quote.ask) if quote else (0.0, 0.0)
        return OrderSendResult(retcode, 0, 0, 0.0, 0.0, bid, ask, RETCODE_COMMENTS.get(retcode, "Rejected"),
                               request_id, 0, req)

    # -- checks ------------------------------------------------------------------------------------

    def plan(self, account: Account, req: TradeRequest) -> Plan:
        if req.action == c.TRADE_ACTION_DEAL:
            return self._plan_deal(account, req)
        if req.action == c.TRADE_ACTION_SLTP:
            return self._plan_sltp(account, req)
        if req.action == c.TRADE_ACTION_CLOSE_BY:
            return self._plan_close_by(account, req)
        raise Rejected(c.TRADE_RETCODE_INVALID)  # pending orders are not simulated

    def _plan_deal(self, account: Account, req: TradeRequest) -> Plan:
        spec = self._spec(req.symbol)
        if req.type not in (c.ORDER_TYPE_BUY, c.ORDER_TYPE_SELL):
            raise Rejected(c.TRADE_RETCODE_INVALID_ORDER)
        position = self._position(account, req.position) if req.position else None
        if position is not None:
            if position.symbol != req.symbol or req.type != position.close_deal_type:
                raise Rejected(c.TRADE_RETCODE_INVALID)  # never let a "close" open or add to a position
        else:
            _check_trade_mode(spec, req.type)
        _check_volume(spec, req.volume)
        if position is not None and req.volume > position.volume + VOLUME_EPSILON:
            raise Rejected(c.TRADE_RETCODE_INVALID_CLOSE_VOLUME)
        _check_filling(spec, req.type_filling)
        self._check_open(spec)
        if position is not None:
            return Plan("close", spec, position)
        quote = self.market.symbols[spec.name]
        _check_stops(spec, req.type, req.sl, req.tp, quote.bid, quote.ask)
        self._check_money(account, req)
        return Plan("open", spec)

    def _plan_sltp(self, account: Account, req: TradeRequest) -> Plan:
        position = self._position(account, req.position)
        spec = self._spec(position.symbol)
        self._check_open(spec)
        quote = self.market.symbols[spec.name]
        _check_stops(spec, position.type, req.sl, req.tp, quote.bid, quote.ask)
        if (req.sl, req.tp) == (position.sl, position.tp):
            raise Rejected(c.TRADE_RETCODE_NO_CHANGES)
        return Plan("sltp", spec, position)

    def _plan_close_by(self, account: Account, req: TradeRequest) -> Plan:
        position, opposite = self._position(account, req.position), self._position(account, req.position_by)
        if position.symbol != opposite.symbol or position.type == opposite.type:
            raise Rejected(c.TRADE_RETCODE_INVALID)
        spec = self._spec(position.symbol)
        self._check_open(spec)
        return Plan("close_by", spec, position, opposite)

    def _spec(self, symbol: str) -> SymbolSpec:
        market = self.market.symbols.get(symbol)
        if market is None:
            raise Rejected(c.TRADE_RETCODE_INVALID)
        return market.spec

    def _position(self, account: Account, ticket: int) -> Position:
        position = account.positions.get(ticket)
        if position is None:
            closed = ticket in account.closed_positions
            raise Rejected(c.TRADE_RETCODE_POSITION_CLOSED if closed else c.TRADE_RETCODE_INVALID)
        return position

    def _check_open(self, spec: SymbolSpec) -> None:
        if spec.trade_mode == c.SYMBOL_TRADE_MODE_DISABLED:
            raise Rejected(c.TRADE_RETCODE_TRADE_DISABLED)
        if not self.market.is_open(spec.name):
            raise Rejected(c.TRADE_RETCODE_MARKET_CLOSED)

    def _check_money(self, account: Account, req: TradeRequest) -> None:
        equity = account.snapshot(self.market).equity(account.balance, account.credit)
        margin = hedged_margin(margin_legs(account, self.market, (req.symbol, req.type, req.volume)))
        if equity - margin < 0:
            raise Rejected(c.TRADE_RETCODE_NO_MONEY)

    def _fill_price(self, spec: SymbolSpec, req: TradeRequest, faults: FaultConfig, rng: random.Random) -> float:
        """Market price plus injected faults; Request/Instant execution enforces the deviation."""
        if faults.price_off_probability and rng.random() < faults.price_off_probability:
            raise Rejected(c.TRADE_RETCODE_PRICE_OFF)
        instant = spec.exemode in _INSTANT_MODES
        if instant and req.price <= 0:
            raise Rejected(c.TRADE_RETCODE_INVALID_PRICE)
        if instant and faults.requote_probability and rng.random() < faults.requote_probability:
            raise Rejected(c.TRADE_RETCODE_REQUOTE)
        quote = self.market.symbols[spec.name]
        buying = req.type == c.ORDER_TYPE_BUY
        price = quote.ask if buying else quote.bid
        if faults.slippage_points > 0 and faults.slippage_probability and rng.random() < faults.slippage_probability:
            slip = rng.randint(1, faults.slippage_points) * spec.point
            price = round(price + slip if buying else price - slip, spec.digits)
        if instant and abs(price - req.price) > req.deviation * spec.point + spec.point / 10:
            raise Rejected(c.TRADE_RETCODE_REQUOTE)
        return price

    # -- execution ---------------------------------------------------------------------------------

    def _execute(self, account: Account, plan: Plan, req: TradeRequest, price: float, reason: int,
                 request_id: int) -> OrderSendResult:
        if plan.kind == "close":
            assert plan.position is not None
            order, deal = self.close_position(account, plan.position, req.volume, price, reason=reason,
                                              comment=req.comment, magic=req.magic, filling=req.type_filling)
        else:
            order, deal = self._open(account, plan.spec, req, price, reason)
        quote = self.market.symbols[plan.spec.name]
        return OrderSendResult(c.TRADE_RETCODE_DONE, deal, order, req.volume, price, quote.bid, quote.ask,
                               RETCODE_COMMENTS[c.TRADE_RETCODE_DONE], request_id, 0, req)

    def _open(self, account: Account, spec: SymbolSpec, req: TradeRequest, price: float,
              reason: int) -> tuple[int, int]:
        now = self.market.server_msc()
        order = self._order_ticket()
        position = Position(order, spec.name, req.type, req.volume, price, req.sl, req.tp, req.magic,
                            req.comment, reason, now, now)
        account.positions[order] = position
        self._by_symbol[spec.name][order] = (account, position)
        self._exposed[account.login] = account
        self._record_order(account, order, req.type, req.volume, price, position, reason, req.comment,
                           req.magic, req.type_filling, sl=req.sl, tp=req.tp)
        deal = self._record_deal(account, order, req.type, c.DEAL_ENTRY_IN, position, req.volume, price,
                                 0.0, reason, req.comment, req.magic)
        return order, deal

    def close_position(self, account: Account, position: Position, volume: float, price: float, *,
                       reason: int, comment: str, magic: int, filling: int = c.ORDER_FILLING_FOK,
                       entry: int = c.DEAL_ENTRY_OUT, order: int | None = None) -> tuple[int, int]:
        """Close volume lots of the position at price; returns (order ticket, deal ticket)."""
        spec = self.market.symbols[position.symbol].spec
        profit = profit_in(account.currency, self.market, spec, position.type, volume, position.price_open, price)
        close_type = position.close_deal_type
        if order is None:
            order = self._order_ticket()
            self._record_order(account, order, close_type, volume, price, position, reason, comment, magic, filling)
        deal = self._record_deal(account, order, close_type, entry, position, volume, price, profit, reason,
                                 comment, magic)
        account.balance = round(account.balance + profit, 2)
        remaining = round(position.volume - volume, 8)
        if remaining <= VOLUME_EPSILON:
            self._forget(account, position)
        else:
            position.volume = remaining
            position.time_update_msc = self.market.server_msc()
        account.revision += 1
        return order, deal

    def _forget(self, account: Account, position: Position) -> None:
        del account.positions[position.ticket]
        account.closed_positions.add(position.ticket)
        self._by_symbol[position.symbol].pop(position.ticket, None)
        if not account.positions:
            self._exposed.pop(account.login, None)

    def _modify(self, account: Account, plan: Plan, req: TradeRequest, request_id: int) -> OrderSendResult:
        position = plan.position
        assert position is not None
        position.sl, position.tp = req.sl, req.tp
        position.time_update_msc = self.market.server_msc()
        account.revision += 1
        quote = self.market.symbols[position.symbol]
        return OrderSendResult(c.TRADE_RETCODE_DONE, 0, 0, 0.0, 0.0, quote.bid, quote.ask,
                               RETCODE_COMMENTS[c.TRADE_RETCODE_DONE], request_id, 0, req)

    def _close_by(self, account: Account, plan: Plan, req: TradeRequest, request_id: int) -> OrderSendResult:
        """Close two opposite positions against each other, each at the other's open price."""
        first, second = plan.position, plan.opposite
        assert first is not None and second is not None
        volume = min(first.volume, second.volume)
        order = self._order_ticket()
        self._record_order(account, order, c.ORDER_TYPE_CLOSE_BY, volume, second.price_open, first,
                           c.DEAL_REASON_EXPERT, req.comment, req.magic, c.ORDER_FILLING_FOK,
                           position_by=second.ticket)
        _, deal = self.close_position(account, first, volume, second.price_open, reason=c.DEAL_REASON_EXPERT,
                                      comment=req.comment, magic=req.magic, entry=c.DEAL_ENTRY_OUT_BY,
                                      order=order)
        self.close_position(account, second, volume, first.price_open, reason=c.DEAL_REASON_EXPERT,
                            comment=req.comment, magic=req.magic, entry=c.DEAL_ENTRY_OUT_BY, order=order)
        quote = self.market.symbols[first.symbol]
        return OrderSendResult(c.TRADE_RETCODE_DONE, deal, order, volume, second.price_open, quote.bid,
                               quote.ask, RETCODE_COMMENTS[c.TRADE_RETCODE_DONE], request_id, 0, req)

    def balance_operation(self, account: Account, amount: float, comment: str,
                          deal_type: int = c.DEAL_TYPE_BALANCE) -> int:
        """A deposit or withdrawal (DEAL_TYPE_BALANCE: the balance) or a credit (DEAL_TYPE_CREDIT: the credit)."""
        deal = self._deal_ticket()
        now = self.market.server_msc()
        account.add_deal(TradeDeal(deal, 0, now // 1000, now, deal_type, c.DEAL_ENTRY_IN, 0, 0,
                                   c.DEAL_REASON_CLIENT, 0.0, 0.0, 0.0, 0.0, round(amount, 2), 0.0, "", comment, ""))
        if deal_type == c.DEAL_TYPE_CREDIT:
            account.credit = round(account.credit + amount, 2)
        else:
            account.balance = round(account.balance + amount, 2)
        return deal

    # -- history records -----------------------------------------------------------------------------

    def _order_ticket(self) -> int:
        self._next_order += 1
        return self._next_order

    def _deal_ticket(self) -> int:
        self._next_deal += 1
        return self._next_deal

    def _record_order(self, account: Account, ticket: int, order_type: int, volume: float, price: float,
                      position: Position, reason: int, comment: str, magic: int, filling: int, *,
                      sl: float = 0.0, tp: float = 0.0, position_by: int = 0) -> None:
        now = self.market.server_msc()
        account.add_order(TradeOrder(
            ticket=ticket, time_setup=now // 1000, time_setup_msc=now, time_done=now // 1000, time_done_msc=now,
            time_expiration=0, type=order_type, type_time=c.ORDER_TIME_GTC, type_filling=filling,
            state=c.ORDER_STATE_FILLED, magic=magic, position_id=position.ticket, position_by_id=position_by,
            reason=reason, volume_initial=volume, volume_current=0.0, price_open=price, sl=sl, tp=tp,
            price_current=price, price_stoplimit=0.0, symbol=position.symbol, comment=comment, external_id="",
        ))

    def _record_deal(self, account: Account, order: int, deal_type: int, entry: int, position: Position,
                     volume: float, price: float, profit: float, reason: int, comment: str, magic: int) -> int:
        deal = self._deal_ticket()
        now = self.market.server_msc()
        account.add_deal(TradeDeal(deal, order, now // 1000, now, deal_type, entry, magic, position.ticket,
                                   reason, volume, price, 0.0, 0.0, profit, 0.0, position.symbol, comment, ""))
        return deal

    # -- reactions to the market ---------------------------------------------------------------------

    def on_ticks(self, ticked: list[SymbolMarket]) -> None:
        """SL/TP fire at the market price of the tick that crosses them, so a gap fills beyond the level."""
        for quote in ticked:
            for account, position in list(self._by_symbol[quote.spec.name].values()):
                if not (position.sl or position.tp):  # nothing to fire (most positions): no call for it
                    continue
                hit = _stop_hit(position, quote.bid, quote.ask)
                if hit is not None:
                    reason, tag, level = hit
                    price = position_price(self.market, position.symbol, position.type)
                    self.close_position(account, position, position.volume, price, reason=reason,
                                        comment=f"[{tag} {level:.{quote.spec.digits}f}]", magic=position.magic)

    def enforce_stop_out(self) -> None:
        """Below margin_so_so percent, close the biggest loser first until the level recovers."""
        for account in list(self._exposed.values()):
            while account.positions:
                snap = account.snapshot(self.market)
                level = account.margin_level(snap)
                if not snap.margin or level >= account.margin_so_so:
                    break
                tradable = [p for p in account.positions.values() if self.market.is_open(p.symbol)]
                if not tradable:
                    break
                loser = min(tradable, key=lambda p: (snap.profits[p.ticket], p.ticket))
                equity = snap.equity(account.balance, account.credit)
                self.close_position(account, loser, loser.volume,
                                    position_price(self.market, loser.symbol, loser.type),
                                    reason=c.DEAL_REASON_SO, magic=loser.magic,
                                    comment=f"[so {level:.2f}%, {equity:.2f}/{snap.margin:.2f}]")


def _stop_hit(position: Position, bid: float, ask: float) -> tuple[int, str, float] | None:
    price = bid if position.type == c.POSITION_TYPE_BUY else ask
    loss_side = -1.0 if position.type == c.POSITION_TYPE_BUY else 1.0  # direction in which the SL lies
    if position.sl and (price - position.sl) * loss_side >= 0:
        return c.DEAL_REASON_SL, "sl", position.sl
    if position.tp and (position.tp - price) * loss_side >= 0:
        return c.DEAL_REASON_TP, "tp", position.tp
    return None


def _check_trade_mode(spec: SymbolSpec, order_type: int) -> None:
    mode = spec.trade_mode
    if mode == c.SYMBOL_TRADE_MODE_CLOSEONLY:
        raise Rejected(c.TRADE_RETCODE_CLOSE_ONLY)
    if mode == c.SYMBOL_TRADE_MODE_LONGONLY and order_type == c.ORDER_TYPE_SELL:
        raise Rejected(c.TRADE_RETCODE_LONG_ONLY)
    if mode == c.SYMBOL_TRADE_MODE_SHORTONLY and order_type == c.ORDER_TYPE_BUY:
        raise Rejected(c.TRADE_RETCODE_SHORT_ONLY)


def _check_volume(spec: SymbolSpec, volume: float) -> None:
    steps = volume / spec.volume_step
    if (volume < spec.volume_min - VOLUME_EPSILON or volume > spec.volume_max + VOLUME_EPSILON
            or abs(steps - round(steps)) > 1e-6):
        raise Rejected(c.TRADE_RETCODE_INVALID_VOLUME)


def _check_filling(spec: SymbolSpec, filling: int) -> None:
    """Request/Instant execution fill market orders FOK whatever is asked; Market execution takes FOK or
    IOC when the symbol's filling_mode allows it and never RETURN; Exchange execution also takes RETURN."""
    if spec.exemode in _INSTANT_MODES:
        if filling == c.ORDER_FILLING_BOC:
            raise Rejected(c.TRADE_RETCODE_INVALID_FILL)
        return
    allowed = {c.ORDER_FILLING_FOK: bool(spec.filling_mode & FILLING_FOK),
               c.ORDER_FILLING_IOC: bool(spec.filling_mode & FILLING_IOC),
               c.ORDER_FILLING_RETURN: spec.exemode == c.SYMBOL_TRADE_EXECUTION_EXCHANGE}
    if not allowed.get(filling, False):
        raise Rejected(c.TRADE_RETCODE_INVALID_FILL)


def _check_stops(spec: SymbolSpec, position_type: int, sl: float, tp: float, bid: float, ask: float) -> None:
    """A buy closes at bid, so its SL must sit below bid and its TP above, by at least the stops level."""
    gap = spec.stops_level * spec.point - spec.point / 10
    if position_type == c.POSITION_TYPE_BUY:
        bad = (sl and not (sl < bid and bid - sl >= gap)) or (tp and not (tp > bid and tp - bid >= gap))
    else:
        bad = (sl and not (sl > ask and sl - ask >= gap)) or (tp and not (tp < ask and ask - tp >= gap))
    if bad:
        raise Rejected(c.TRADE_RETCODE_INVALID_STOPS)
