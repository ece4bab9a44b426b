"""What the close executor did with a command, ticket by ticket."""

from __future__ import annotations

import uuid
from typing import ClassVar

from pydantic import Field

from schemas.common import CloseReason, Direction, Money, Price, Symbol, Ticket, UserId, Volume
from schemas.envelope import Payload


class CloseOutcome(Payload):
    command_id: uuid.UUID
    user_id: UserId
    ticket: Ticket
    symbol: Symbol
    reason: CloseReason
    direction: Direction | None = None
    volume: Volume | None = None
    retcode: int | None = Field(default=None, description="OrderSendResult.retcode; None if never sent")
    price: Price | None = None
    entry_price: Price | None = None
    pnl: Money | None = Field(default=None, description="In the account currency")
    pnl_gbp: Money | None = None
    attempts: int = Field(default=0, ge=0)
    error_message: str | None = Field(default=None, max_length=2000)


class PositionClosed(CloseOutcome):
    event_type: ClassVar[str] = "PositionClosed"


class PositionCloseFailed(CloseOutcome):
    """Not closed: rejected, retries exhausted, or the ticket was already gone (``retcode`` None)."""

    event_type: ClassVar[str] = "PositionCloseFailed"
