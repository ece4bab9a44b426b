"""The demo's first two minutes: approved trades, and every kind of divergence, on a schedule.

Each step is what a platform or a trader does at a moment after start. What the reconciliation
should conclude from each is in its description; the poller and the streams find it on their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Container, Mapping
from dataclasses import dataclass

from producers.demo.accounts import DemoUser, deposit
from producers.executor.parsing import filling_mode
from producers.mt5 import constants as c
from producers.mt5.gateway import Gateway
from producers.mt5.simulator import SimulatedBroker
from schemas.common import Direction
from schemas.platform import TradeApproved, TradeClosedByPlatform

log = logging.getLogger(__name__)

PLATFORM_MAGIC = 424_242  # the platform's orders, as its expert would mark them
Publish = Callable[[TradeApproved | TradeClosedByPlatform], Awaitable[object]]


class DemoPlatform:
    """The signal platform of the demo: approves signals, places them, and plays the traders' hands."""

    def __init__(self, broker: SimulatedBroker, *, users: Mapping[str, DemoUser],
                 gateways: Mapping[str, Gateway], publish: Publish, locked: Container[str] = frozenset()) -> None:
        self.broker, self.users, self.gateways, self.publish = broker, users, gateways, publish
        self.locked = locked  # accounts reconguard has locked: the platform approves nothing for them
        self.tickets: dict[str, int] = {}  # signal id -> ticket
        self.approvals: dict[str, TradeApproved] = {}  # signal id -> what was approved
        self.held_back: dict[str, TradeApproved] = {}  # approvals placed but not yet announced

    async def approve(self, signal_id: str, user_id: str, symbol: str, direction: Direction, volume: float, *,
                      sl_points: int = 0,
                      tp_points: int = 0, entry_off_points: int = 0, place_volume: float | None = None,
                      place_direction: Direction | None = None, place: bool = True, anonymous: bool = False,
                      announce: bool = True) -> str:
        """Approve a signal, place it (unless ``place`` is False) and publish the expectation.

        ``entry_off_points``: how much better than the market the approved entry was (slippage);
        ``place_volume``: the volume actually placed, when it differs (volume mismatch);
        ``place_direction``: the side actually placed, when it differs (direction mismatch; give
        such a signal no SL/TP, which would sit on the wrong side of the placed price);
        ``anonymous``: the order carries no identity (no comment, no magic, ticket not reported), as
        from a platform that does not follow docs/platform-integration.md;
        ``announce``: False holds the approval back until ``announce(signal_id)`` (published late).
        """
        if user_id in self.locked:
            log.info("demo platform: %s is locked; signal %s not approved", user_id, signal_id)
            return signal_id
        gateway = self.gateways[user_id]
        info, tick = gateway.symbol_info(symbol), gateway.symbol_info_tick(symbol)
        assert info is not None and tick is not None
        sign = 1 if direction is Direction.BUY else -1
        market = tick.ask if direction is Direction.BUY else tick.bid
        entry = round(market - sign * entry_off_points * info.point, info.digits)
        sl = round(market - sign * sl_points * info.point, info.digits) if sl_points else None
        tp = round(market + sign * tp_points * info.point, info.digits) if tp_points else None
        side = place_direction or direction
        price = tick.ask if side is Direction.BUY else tick.bid
        ticket = self._place(gateway, signal_id, symbol, side, place_volume or volume, price, sl, tp,
                             filling_mode(info.filling_mode), anonymous=anonymous) if place else None
        approval = TradeApproved(
            signal_id=signal_id, approval_id=f"apr-{signal_id.removeprefix('sig-')}", user_id=user_id,
            symbol=symbol,
            direction=direction, volume=volume, entry_price=entry, stop_loss=sl, take_profit=tp,
            mt5_position_id=None if anonymous else ticket)
        self.approvals[signal_id] = approval
        if announce:
            await self.publish(approval)
        else:
            self.held_back[signal_id] = approval
        return signal_id

    async def announce(self, signal_id: str) -> None:
        """Publish an approval held back by ``approve(..., announce=False)``."""
        await self.publish(self.held_back.pop(signal_id))

    def fill(self, user_id: str, signal_id: str) -> int | None:
        """Place, late and without identity, an order approved with ``place=False``."""
        a = self.approvals[signal_id]
        gateway = self.gateways[user_id]
        info, tick = gateway.symbol_info(a.symbol), gateway.symbol_info_tick(a.symbol)
        assert info is not None and tick is not None
        price = tick.ask if a.direction is Direction.BUY else tick.bid
        return self._place(gateway, signal_id, a.symbol, a.direction, a.volume, price, a.stop_loss, a.take_profit,
                           filling_mode(info.filling_mode), anonymous=True)

    async def close(self, user_id: str, signal_id: str, *, execute: bool = True) -> None:
        """The platform closes a trade: tells reconguard, and closes it on the terminal (unless ``execute``
        is False: a close the platform reports but never gets done)."""
        ticket = self.tickets[signal_id]
        await self.publish(TradeClosedByPlatform(signal_id=signal_id, approval_id=f"apr-{signal_id.removeprefix('sig-')}",
                                                 user_id=user_id, mt5_position_id=ticket))
        if execute:
            self.close_on_terminal(user_id, signal_id)

    def close_on_terminal(self, user_id: str, signal_id: str) -> None:
        gateway = self.gateways[user_id]
        found = gateway.positions_get(ticket=self.tickets[signal_id])
        if not found:
            return
        p = found[0]
        info, tick = gateway.symbol_info(p.symbol), gateway.symbol_info_tick(p.symbol)
        assert info is not None and tick is not None
        buy = p.type == c.POSITION_TYPE_BUY
        result = gateway.order_send({
            "action": c.TRADE_ACTION_DEAL, "symbol": p.symbol, "volume": p.volume, "position": p.ticket,
            "type": c.ORDER_TYPE_SELL if buy else c.ORDER_TYPE_BUY, "price": tick.bid if buy else tick.ask,
            "deviation": 50, "magic": PLATFORM_MAGIC, "comment": signal_id, "type_time": c.ORDER_TIME_GTC,
            "type_filling": filling_mode(info.filling_mode)})
        if result is None or result.retcode != c.TRADE_RETCODE_DONE:
            log.warning("demo: closing %s failed: %s", signal_id, result or gateway.last_error())

    def _place(self, gateway: Gateway, signal_id: str, symbol: str, direction: Direction, volume: float,
               price: float, sl: float | None, tp: float | None, filling: int, *, anonymous: bool = False
               ) -> int | None:
        result = gateway.order_send({
            "action": c.TRADE_ACTION_DEAL, "symbol": symbol, "volume": float(volume),
            "type": c.ORDER_TYPE_BUY if direction is Direction.BUY else c.ORDER_TYPE_SELL,
            "price": float(price),
            "sl": float(sl or 0.0), "tp": float(tp or 0.0), "deviation": 50,
            "magic": 0 if anonymous else PLATFORM_MAGIC, "comment": "" if anonymous else signal_id,
            "type_time": c.ORDER_TIME_GTC, "type_filling": filling})
        if result is None or result.retcode != c.TRADE_RETCODE_DONE:
            log.warning("demo: placing %s failed: %s", signal_id, result or gateway.last_error())
            return None
        self.tickets[signal_id] = result.order
        return result.order

    # --- the traders' own hands, and the market ------------------------------------------------------

    def login(self, user_id: str) -> int:
        return self.users[user_id].login

    def partial_close(self, user_id: str, signal_id: str, volume: float) -> None:
        self.broker.manual_close(self.login(user_id), self.tickets[signal_id], volume)

    def modify(self, user_id: str, signal_id: str, *, sl_points: int, tp_points: int) -> None:
        position = self.gateways[user_id].positions_get(ticket=self.tickets[signal_id])
        if not position:
            return
        p, point = position[0], self._point(position[0].symbol)
        sign = 1 if p.type == c.POSITION_TYPE_BUY else -1
        self.broker.manual_modify(self.login(user_id), p.ticket,
                                  sl=round(p.price_open - sign * sl_points * point, 8),
                                  tp=round(p.price_open + sign * tp_points * point, 8))

    def manual_open(self, user_id: str, symbol: str, direction: Direction, volume: float) -> int:
        order_type = c.ORDER_TYPE_BUY if direction is Direction.BUY else c.ORDER_TYPE_SELL
        return self.broker.manual_open(self.login(user_id), symbol, order_type, volume, comment="by hand")

    def move_to_stop(self, user_id: str, signal_id: str, level: str) -> None:
        """Quote the market exactly at the position's SL or TP, so the broker closes it there."""
        found = self.gateways[user_id].positions_get(ticket=self.tickets[signal_id])
        if not found:
            return
        p = found[0]
        target = p.sl if level == "sl" else p.tp
        spread = (tick := self.broker.tick(p.symbol)).ask - tick.bid
        # A buy closes at bid, a sell at ask: put that side of the quote on the level.
        if p.type == c.POSITION_TYPE_BUY:
            self.broker.set_quote(p.symbol, target, target + spread)
        else:
            self.broker.set_quote(p.symbol, target - spread, target)

    def step_quote(self, symbol: str, points: int) -> None:
        tick, point = self.broker.tick(symbol), self._point(symbol)
        self.broker.set_quote(symbol, tick.bid + points * point, tick.ask + points * point)

    def _point(self, symbol: str) -> float:
        # From the market it moves, not through a terminal: a disconnected terminal must not stop the market.
        return float(self.broker.market.symbols[symbol].point)


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the demo started
    what: str
    act: Callable[[DemoPlatform], Awaitable[object] | object]


BUY, SELL = Direction.BUY, Direction.SELL


def default_script() -> list[Step]:
    """Every divergence kind within two minutes; dave's account is driven through its critical level,
    and a spread blow-out on XAUUSD trips the market guard."""
    steps = [
        Step(2, "alice: EURUSD buy approved and placed as approved (matched)",
             lambda p: p.approve("sig-alice-1", "u-alice", "EURUSD", BUY, 0.5, sl_points=300, tp_points=600)),
        Step(4, "bob: GBPUSD sell approved and placed (matched)",
             lambda p: p.approve("sig-bob-1", "u-bob", "GBPUSD", SELL, 0.3, sl_points=300, tp_points=600)),
        Step(6, "carol: EURUSD buy filled 6 pips worse than approved (slippage)",
             lambda p: p.approve("sig-carol-1", "u-carol", "EURUSD", BUY, 0.2, sl_points=300, tp_points=600,
                                 entry_off_points=60)),
        Step(8, "dave: USDJPY buy approved, never placed (missed fill)",
             lambda p: p.approve("sig-dave-1", "u-dave", "USDJPY", BUY, 0.1, sl_points=300, tp_points=600,
                                 place=False)),
        Step(10, "bob: XAUUSD bought by hand (manual trade)",
             lambda p: p.manual_open("u-bob", "XAUUSD", BUY, 0.1)),
        Step(12, "alice: GBPUSD buy approved and placed",
             lambda p: p.approve("sig-alice-2", "u-alice", "GBPUSD", BUY, 1.0, sl_points=400, tp_points=800)),
        Step(14, "carol: USDJPY sell approved for 0.5 lots, placed with 0.3 (volume mismatch)",
             lambda p: p.approve("sig-carol-2", "u-carol", "USDJPY", SELL, 0.5, sl_points=400, tp_points=800,
                                 place_volume=0.3)),
        Step(16, "dave: EURUSD buy approved and placed",
             lambda p: p.approve("sig-dave-2", "u-dave", "EURUSD", BUY, 0.3, sl_points=300, tp_points=600)),
        Step(18, "bob: EURUSD buy with a tight take profit",
             lambda p: p.approve("sig-bob-2", "u-bob", "EURUSD", BUY, 0.2, sl_points=300, tp_points=40)),
        Step(20, "carol: GBPUSD sell with a tight stop",
             lambda p: p.approve("sig-carol-3", "u-carol", "GBPUSD", SELL, 0.3, sl_points=50, tp_points=600)),
        Step(22, "carol: XAUUSD buy approved, placed as a sell (direction mismatch)",
             lambda p: p.approve("sig-carol-4", "u-carol", "XAUUSD", BUY, 0.1, place_direction=SELL)),
        Step(24, "alice: closes 0.4 of her GBPUSD by hand (partial close)",
             lambda p: p.partial_close("u-alice", "sig-alice-2", 0.4)),
        Step(28, "dave: moves his EURUSD SL and TP by hand (SL/TP change)",
             lambda p: p.modify("u-dave", "sig-dave-2", sl_points=150, tp_points=300)),
        Step(32, "market reaches bob's EURUSD take profit (broker TP close)",
             lambda p: p.move_to_stop("u-bob", "sig-bob-2", "tp")),
        Step(36, "market reaches carol's GBPUSD stop (broker SL close)",
             lambda p: p.move_to_stop("u-carol", "sig-carol-3", "sl")),
        Step(38, "bob: closes his GBPUSD sell by hand (closed outside the platform)",
             lambda p: p.broker.manual_close(p.login("u-bob"), p.tickets["sig-bob-1"])),
        Step(40, "alice: USDJPY buy with a stop 10 pips away",
             lambda p: p.approve("sig-alice-3", "u-alice", "USDJPY", BUY, 0.3, sl_points=100,
                                 tp_points=1000)),
        Step(45, "bob: US30 buy of 18 lots (most of his margin)",
             lambda p: p.approve("sig-bob-3", "u-bob", "US30", BUY, 18.0, tp_points=100_000)),
        Step(55, "USDJPY gaps 0.5 % down through alice's stop (gap)",
             lambda p: p.broker.gap("USDJPY", -0.5)),
        Step(60, "dave: EURGBP buy of 5 lots",
             lambda p: p.approve("sig-dave-3", "u-dave", "EURGBP", BUY, 5.0)),
        Step(85, "XAUUSD's spread widens tenfold: the market guard closes carol's XAUUSD (spread)",
             lambda p: p.broker.widen_spread("XAUUSD", 10.0, 30)),
        Step(75, "US30 gaps 1.2 % down: bob's margin level falls below stop-out (broker stop-out)",
             lambda p: p.broker.gap("US30", -1.2)),
    ]
    steps += [  # money flows are not trading results: neither moves a guard (a broker on UTC+2/UTC+3)
        Step(48, "alice deposits 2 000 GBP (no gain for the guard)", lambda p: deposit(p.broker, "u-alice", 2_000.0)),
        Step(66, "alice withdraws 1 800 GBP, 15 % of her equity, positions open (no alert)",
             lambda p: deposit(p.broker, "u-alice", -1_800.0)),
    ]
    steps += [Step(70 + 3 * i, f"EURGBP falls 3 pips ({i + 1}/10): dave's drawdown passes warning, "
                                f"then critical",
                   lambda p: p.step_quote("EURGBP", -30)) for i in range(10)]
    return sorted(steps, key=lambda s: s.at)


async def play(platform: DemoPlatform, steps: list[Step], *, stop: asyncio.Event,
               clock: Callable[[], float] = time.monotonic) -> None:
    """Run each step at its time; a step that fails is logged and the show goes on."""
    start = clock()
    for step in steps:
        delay = start + step.at - clock()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
                return
            except TimeoutError:
                pass
        if stop.is_set():
            return
        log.info("demo t+%.0fs: %s", step.at, step.what)
        try:
            done = step.act(platform)
            if asyncio.iscoroutine(done):
                await done
        except Exception:  # noqa: BLE001 - the demo keeps running whatever one step does
            log.exception("demo step failed: %s", step.what)
