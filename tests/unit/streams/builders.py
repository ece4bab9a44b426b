"""Builders of the streams' input events, valid by construction, on a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import Envelope, observed
from schemas.common import CloseReason, DealEntry, DealReason, Direction
from schemas.platform import TradeApproved, TradeClosedByPlatform
from schemas.reports import (
    AccountReport,
    AccountSyncFailed,
    ObservedDeal,
    ObservedPosition,
    PositionReport,
    TickReport,
)
from schemas.results import PositionClosed, PositionCloseFailed

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
USER = "trader-1"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def approved(approval_id: str = "apr-1", *, t: float = 0, symbol: str = "EURUSD", direction: Direction = Direction.BUY,
             volume: float = 0.1, entry: float = 1.1, sl: float | None = 1.09, tp: float | None = 1.12,
             ticket: int | None = None, signal_id: str | None = None) -> Envelope[TradeApproved]:
    payload = TradeApproved(signal_id=signal_id or f"sig-{approval_id}", approval_id=approval_id, user_id=USER,
                            symbol=symbol, direction=direction, volume=volume, entry_price=entry, stop_loss=sl,
                            take_profit=tp, mt5_position_id=ticket)
    return observed(payload, account_id=USER, occurred_at=at(t))


def platform_closed(approval_id: str = "apr-1", *, t: float = 0, volume: float | None = None,
                    ticket: int | None = None) -> Envelope[TradeClosedByPlatform]:
    payload = TradeClosedByPlatform(signal_id=f"sig-{approval_id}", approval_id=approval_id, user_id=USER,
                                    mt5_position_id=ticket, volume=volume)
    return observed(payload, account_id=USER, occurred_at=at(t))


def position(ticket: int = 1001, *, symbol: str = "EURUSD", direction: Direction = Direction.BUY,
             volume: float = 0.1, price_open: float = 1.1, price_current: float = 1.1005, sl: float | None = 1.09,
             tp: float | None = 1.12, profit_gbp: float = 4.0, comment: str = "", opened: float = 1) -> ObservedPosition:
    return ObservedPosition(ticket=ticket, symbol=symbol, direction=direction, volume=volume, price_open=price_open,
                            price_current=price_current, sl=sl, tp=tp, profit=profit_gbp, profit_gbp=profit_gbp,
                            comment=comment, opened_at=at(opened))


def deal(position_id: int = 1001, *, reason: DealReason = DealReason.SL, price: float = 1.09, t: float = 5,
         volume: float = 0.1, entry: DealEntry = DealEntry.OUT, direction: Direction = Direction.SELL,
         profit_gbp: float = -100.0, symbol: str = "EURUSD") -> ObservedDeal:
    return ObservedDeal(ticket=position_id + 500_000, position_id=position_id, symbol=symbol, direction=direction,
                        entry=entry, reason=reason, volume=volume, price=price, profit=profit_gbp,
                        profit_gbp=profit_gbp, time=at(t))


def positions(*held: ObservedPosition, t: float = 2, deals: tuple[ObservedDeal, ...] = (),
              seq: int = 0) -> Envelope[PositionReport]:
    payload = PositionReport(user_id=USER, login=5001, poll_seq=seq, positions=held, closed_deals=deals)
    return observed(payload, account_id=USER, occurred_at=at(t))


def account(equity: float, *, t: float, balance: float = 10_000.0, gbp_rate: float = 1.0, margin: float = 100.0,
            server_time: datetime | None = None) -> Envelope[AccountReport]:
    payload = AccountReport(user_id=USER, login=5001, server="Demo", currency="GBP", poll_seq=int(t),
                            balance=balance, equity=equity, profit=equity - balance, margin=margin,
                            margin_free=equity - margin, margin_level=0.0, gbp_rate=gbp_rate,
                            server_time=server_time)
    return observed(payload, account_id=USER, occurred_at=at(t))


def sync_failed(*, t: float, stage: str = "positions_get") -> Envelope[AccountSyncFailed]:
    payload = AccountSyncFailed(user_id=USER, login=5001, poll_seq=int(t), stage=stage, error_code=-10004,
                                error_message="No IPC connection")
    return observed(payload, account_id=USER, occurred_at=at(t))


def tick(symbol: str = "EURUSD", *, bid: float = 1.1, spread_points: float = 12, t: float = 0,
         quoted: float | None = None, market_open: bool = True, point: float = 0.00001,
         digits: int | None = None, ask: float | None = None, origin: datetime = T0) -> Envelope[TickReport]:
    """A quote polled ``t`` seconds after ``origin`` (true UTC), quoted at ``quoted`` (default ``t``)."""
    payload = TickReport(symbol=symbol, bid=bid, ask=bid + spread_points * point if ask is None else ask,
                         point=point, digits=digits, quoted_at=origin + timedelta(seconds=t if quoted is None
                                                                                   else quoted),
                         market_open=market_open)
    return observed(payload, account_id=USER, occurred_at=origin + timedelta(seconds=t))


def close_result(*, ok: bool = True, ticket: int = 1001, reason: CloseReason = CloseReason.DRAWDOWN_GUARD,
                 t: float = 20) -> Envelope[Any]:
    import uuid

    kind = PositionClosed if ok else PositionCloseFailed
    payload = kind(command_id=uuid.UUID(int=7), user_id=USER, ticket=ticket, symbol="EURUSD", reason=reason,
                   direction=Direction.BUY, volume=0.1, retcode=10009 if ok else 10006,
                   price=1.095 if ok else None, entry_price=1.1, pnl=-50.0 if ok else None,
                   pnl_gbp=-50.0 if ok else None, attempts=1, error_message=None if ok else "rejected")
    return observed(payload, account_id=USER, occurred_at=at(t))
