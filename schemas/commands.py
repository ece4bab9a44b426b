"""Commands: imperative, each with an id derived from its cause so a repeat is recognised."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from pydantic import Field

from schemas.common import CloseReason, Symbol, Ticket, UserId
from schemas.envelope import Payload


class ClosePosition(Payload):
    """Close every listed ticket of one symbol on one account (the envelope id is the command id)."""

    event_type: ClassVar[str] = "ClosePosition"

    user_id: UserId
    symbol: Symbol
    tickets: tuple[Ticket, ...] = Field(min_length=1)
    reason: CloseReason
    rule: str = Field(max_length=128, description="The rule that decided it")
    details: dict[str, Any] = Field(default_factory=dict, description="Inputs and thresholds of the decision")
    alert_id: uuid.UUID | None = Field(default=None, description="The guard alert whose lifecycle this close is")
    alert_tickets: tuple[Ticket, ...] = Field(
        default=(), description="Every ticket the alert closes, across its commands (empty: this command's)")
    attempt: int = Field(default=1, ge=1, description="1 for the guard's order; 2, 3, ... for its retries")


class SyncAccount(Payload):
    """Poll this account now (rate limited to one per account per 10 s)."""

    event_type: ClassVar[str] = "SyncAccount"

    user_id: UserId
    requested_by: str = Field(min_length=1, max_length=64)
