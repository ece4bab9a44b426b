"""Account locks: after a liquidation an account takes no new positions until the lock ends.

``AccountLocked``/``AccountUnlocked`` (streams) tell the platform to stop, and to start again,
approving trades for the account; ``UnlockAccount`` is an admin's command to end a lock. The
envelope id of an ``AccountLocked`` is the lock's id.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import Field

from schemas.common import UserId
from schemas.envelope import Payload


class LockKind(StrEnum):
    """The guard whose liquidation locked the account."""

    DRAWDOWN = "drawdown"
    DAILY_LOSS = "daily_loss"
    PROFIT_TARGET = "profit_target"  # a guard profile's profit target was reached: no liquidation


class LockEnd(StrEnum):
    """How a lock ends (an admin can always end it early)."""

    NEXT_BROKER_DAY = "next_broker_day"
    ADMIN_UNLOCK = "admin_unlock"


class AccountLocked(Payload):
    """The account is locked: the platform must approve no trade for it, and new positions are closed."""

    event_type: ClassVar[str] = "AccountLocked"

    user_id: UserId
    kind: LockKind
    ends: LockEnd
    day: str | None = Field(default=None, max_length=10, description="The broker day of the liquidation")
    message: str = Field(max_length=2000)
    details: dict[str, Any] = Field(default_factory=dict, description="The liquidation that caused it")


class AccountUnlocked(Payload):
    """The lock ``lock_id`` ended: the platform may approve trades for the account again."""

    event_type: ClassVar[str] = "AccountUnlocked"

    user_id: UserId
    lock_id: uuid.UUID
    kind: LockKind
    unlocked_by: str = Field(min_length=1, max_length=64, description="An admin's user id, or 'system'")
    reason: str = Field(min_length=1, max_length=500)


class UnlockAccount(Payload):
    """An admin ends the account's lock (the envelope id is the command id)."""

    event_type: ClassVar[str] = "UnlockAccount"

    user_id: UserId
    requested_by: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=500)
