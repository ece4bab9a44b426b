"""Close requests and close outcomes: pure functions, no I/O.

The request builder is where "never open a position" is made structural: every request it builds
names the position (``position=ticket``), trades the opposite side, and never more than the
position's volume.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from producers.mt5 import constants as c
from producers.poller.parsing import position_direction
from schemas.commands import ClosePosition
from schemas.results import (
    CloseOutcome,
    PositionClosed,
    PositionCloseDeferred,
    PositionCloseFailed,
    PositionCloseSuperseded,
)

# SymbolInfo.filling_mode bits (MQL5 values; the package defines no constants for them).
SYMBOL_FILLING_FOK = 1
SYMBOL_FILLING_IOC = 2

#: Answers that mean "the price moved": worth another try at a fresh price.
RETRYABLE = frozenset({c.TRADE_RETCODE_REQUOTE, c.TRADE_RETCODE_PRICE_CHANGED, c.TRADE_RETCODE_PRICE_OFF})
NOT_FOUND = "position not found"
COMMENT_PREFIX = "rg close "


@dataclass(frozen=True)
class RetryPolicy:
    """How many times one ticket's close is sent at most (the first try included)."""

    max_attempts: int = 3

    def should_retry(self, retcode: int, attempt: int) -> bool:
        return retcode in RETRYABLE and attempt < self.max_attempts


@dataclass(frozen=True)
class CloseSettings:
    deviation: int = 20  # points the fill may differ from the requested price
    magic: int = 770_077  # marks the executor's deals in the terminal's history
    retry: RetryPolicy = RetryPolicy()


def filling_mode(symbol_filling_bits: int) -> int:
    """A filling mode the symbol allows: fill-or-kill (all or nothing) first, then IOC, else RETURN."""
    if symbol_filling_bits & SYMBOL_FILLING_FOK:
        return c.ORDER_FILLING_FOK
    if symbol_filling_bits & SYMBOL_FILLING_IOC:
        return c.ORDER_FILLING_IOC
    return c.ORDER_FILLING_RETURN


def close_comment(command_id: uuid.UUID) -> str:
    """At most 29 characters (the package refuses longer); unique enough to find the deal again."""
    return f"{COMMENT_PREFIX}{command_id.hex[:16]}"


def close_request(position: Any, tick: Any, *, filling: int, settings: CloseSettings,
                  comment: str) -> dict[str, Any]:
    """The opposite market deal naming the position: a buy is sold at bid, a sell bought at ask."""
    is_buy = position.type == c.POSITION_TYPE_BUY
    return {
        "action": c.TRADE_ACTION_DEAL, "position": int(position.ticket), "symbol": position.symbol,
        "volume": float(position.volume), "type": c.ORDER_TYPE_SELL if is_buy else c.ORDER_TYPE_BUY,
        "price": float(tick.bid if is_buy else tick.ask), "deviation": int(settings.deviation),
        "type_filling": int(filling), "type_time": c.ORDER_TIME_GTC, "magic": int(settings.magic),
        "comment": comment[:29],
    }


def is_our_close(deal: Any, *, comment: str, magic: int) -> bool:
    """Whether a deal in history is the closing deal this executor sent for a command."""
    closing = deal.entry in (c.DEAL_ENTRY_OUT, c.DEAL_ENTRY_OUT_BY)
    return closing and deal.magic == magic and deal.comment == comment


def closing_command(deal: Any, *, magic: int) -> str | None:
    """The command (first 16 hex digits of its id) whose close made ``deal``; None if no command of ours did."""
    if deal.magic != magic or not str(deal.comment).startswith(COMMENT_PREFIX):
        return None
    return str(deal.comment)[len(COMMENT_PREFIX):] or None


#: DEAL_REASON_* of a closing deal that was not ours, by the CloseReason it means.
CLOSED_BY_DEAL_REASON = {c.DEAL_REASON_SL: "sl", c.DEAL_REASON_TP: "tp", c.DEAL_REASON_SO: "stop_out"}


def closed_by(deal: Any, *, magic: int) -> Attempted:
    """What closed a position before this command could: another close command of ours, or the terminal."""
    other = closing_command(deal, magic=magic)
    reason = "close_command" if other else CLOSED_BY_DEAL_REASON.get(deal.reason, "manual")
    return Attempted("superseded", price=deal.price or None, volume=deal.volume or None,
                     closed_by=reason, by_command=other, closing_deal=deal.ticket,
                     error=f"already closed by {'command ' + other if other else reason} (deal {deal.ticket})")


@dataclass(frozen=True)
class Attempted:
    """What happened to one ticket, before it becomes a result payload."""

    status: str  # closed, failed, not_found, superseded, deferred; or unknown (the row stays "sending")
    attempts: int = 0
    retcode: int | None = None
    price: float | None = None
    volume: float | None = None
    entry_price: float | None = None
    position_type: int | None = None
    pnl: float | None = None
    error: str | None = None
    closed_by: str | None = None  # superseded: what closed it (close_command, sl, tp, stop_out, manual)
    by_command: str | None = None  # superseded by a command of ours: its id's first 16 hex digits
    closing_deal: int | None = None
    retry_at: datetime | None = None  # deferred: when to try again (the market's next open)

    @property
    def ledger_status(self) -> str:
        """The ledger's own word for it (``close_executions.status``)."""
        return {"superseded": "not_found", "deferred": "failed"}.get(self.status, self.status)


def outcome(command: ClosePosition, command_id: uuid.UUID, ticket: int, attempted: Attempted,
            gbp_rate: float | None) -> CloseOutcome:
    """The result payload of one ticket of a command."""
    fields: dict[str, Any] = dict(
        command_id=command_id, user_id=command.user_id, ticket=ticket, symbol=command.symbol,
        reason=command.reason,
        direction=None if attempted.position_type is None else position_direction(attempted.position_type),
        volume=_positive(attempted.volume), retcode=attempted.retcode, price=_positive(attempted.price),
        entry_price=_positive(attempted.entry_price), pnl=attempted.pnl, attempts=attempted.attempts,
        pnl_gbp=None if attempted.pnl is None or gbp_rate is None else round(attempted.pnl * gbp_rate, 2),
        alert_id=command.alert_id,
    )
    if attempted.status == "closed":
        return PositionClosed(**fields)
    if attempted.status == "superseded":
        return PositionCloseSuperseded(**fields, error_message=attempted.error, closed_by=attempted.closed_by,
                                       superseded_by_command=attempted.by_command,
                                       closing_deal=attempted.closing_deal)
    if attempted.status == "deferred" and attempted.retry_at is not None:
        return PositionCloseDeferred(**fields, error_message=attempted.error, retry_at=attempted.retry_at)
    return PositionCloseFailed(**fields, error_message=(attempted.error or "failed")[:2000])


def _positive(value: float | None) -> float | None:
    """MT5 writes 0.0 for "unknown"; a result carries None instead of an invalid price or volume."""
    return value if value is not None and value > 0 else None
