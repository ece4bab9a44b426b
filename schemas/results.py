"""What the close executor did with a command, ticket by ticket."""

from __future__ import annotations

import uuid
from typing import ClassVar

from pydantic import AwareDatetime, Field

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
    alert_id: uuid.UUID | None = Field(default=None, description="The command's alert_id, copied")


class PositionClosed(CloseOutcome):
    event_type: ClassVar[str] = "PositionClosed"


class PositionCloseFailed(CloseOutcome):
    """Not closed: rejected, retries exhausted, or the ticket was already gone (``retcode`` None)."""

    event_type: ClassVar[str] = "PositionCloseFailed"


class PositionCloseSuperseded(CloseOutcome):
    """Not sent: the position was already closed by something else, named here (never a failure).

    ``superseded_by_command`` is the first 16 hex digits of the other close command's id (as its
    deal comment carries them); ``closed_by`` the reason of the closing deal (sl, tp, stop_out,
    manual, or the guard reason of the other command when known)."""

    event_type: ClassVar[str] = "PositionCloseSuperseded"

    superseded_by_command: str | None = Field(default=None, max_length=32)
    closed_by: str | None = Field(default=None, max_length=32)
    closing_deal: Ticket | None = None


class PositionCloseDeferred(CloseOutcome):
    """Not closed because the market is closed (retcode 10018): to be retried at ``retry_at``."""

    event_type: ClassVar[str] = "PositionCloseDeferred"

    retry_at: AwareDatetime
