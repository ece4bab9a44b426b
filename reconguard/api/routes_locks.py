"""Account locks: whether an account is locked after a liquidation, and an admin's unlock."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from reconguard.api import lock_queries, queries
from reconguard.api.auth import Admin, CurrentCaller, ReadableUser, UserIdPath
from reconguard.api.deps import App, Session
from schemas import observed, utcnow
from schemas.locks import UnlockAccount
from schemas.topics import LOCK_COMMANDS

log = logging.getLogger(__name__)
router = APIRouter(tags=["locks"])

_UNAUTHORISED = {401: {"description": "No, unknown or revoked token"}}
_FORBIDDEN = {403: {"description": "Not your account (or not an admin)"}}
_NOT_FOUND = {404: {"description": "No such user"}}


class LockEventPublic(BaseModel):
    """A lock (``AccountLocked``: ``ends`` says how it ends) or an unlock (``actor`` and ``reason``: who and why)."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: uuid.UUID
    user_id: str
    event_type: str
    lock_id: uuid.UUID
    kind: str = Field(description="drawdown or daily_loss")
    ends: str | None = Field(description="next_broker_day or admin_unlock (locks only)")
    actor: str | None = Field(description="Who unlocked: an admin's id, or 'system' (unlocks only)")
    reason: str | None
    created_at: datetime


class LockStatusPublic(BaseModel):
    user_id: str
    locked: bool
    lock: LockEventPublic | None = Field(description="The lock in force")
    history: list[LockEventPublic] = Field(description="Locks and unlocks, newest first")


class UnlockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, description="Why the account may trade again (recorded)")


class UnlockRequestedPublic(BaseModel):
    command_id: uuid.UUID
    user_id: str
    lock_id: uuid.UUID
    requested_by: str
    requested_at: datetime


@router.get("/locks", response_model=list[LockEventPublic], responses=_UNAUTHORISED)
async def locks_in_force(caller: CurrentCaller, session: Session) -> list[LockEventPublic]:
    """The locks in force that the caller may see (an admin: every account's; a trader: their own)."""
    if caller.is_admin:
        rows = await lock_queries.current_locks(session, limit=500)
    else:
        rows = [r for r in [await lock_queries.current_lock(session, user_id=caller.user_id)] if r is not None]
    return [LockEventPublic.model_validate(r) for r in rows]


@router.get("/users/{user_id}/lock", response_model=LockStatusPublic,
            responses=_UNAUTHORISED | _FORBIDDEN | _NOT_FOUND)
async def lock_status(user: ReadableUser, session: Session) -> LockStatusPublic:
    """Whether the account is locked (the platform must approve no trade for it), and its lock history."""
    lock = await lock_queries.current_lock(session, user_id=user.id)
    history = await lock_queries.lock_history(session, user_id=user.id, limit=50)
    return LockStatusPublic(user_id=user.id, locked=lock is not None,
                            lock=None if lock is None else LockEventPublic.model_validate(lock),
                            history=[LockEventPublic.model_validate(h) for h in history])


@router.post(
    "/users/{user_id}/unlock",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UnlockRequestedPublic,
    responses=_UNAUTHORISED | _FORBIDDEN | _NOT_FOUND | {
        409: {"description": "The account is not locked"},
        503: {"description": "The broker did not take the command"},
    },
)
async def unlock(user_id: UserIdPath, body: UnlockRequest, caller: Admin, session: Session, app: App
                 ) -> UnlockRequestedPublic:
    """End the account's lock (admins only); the worker records the unlock with who and why."""
    if await queries.get_user(session, user_id=user_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user {user_id!r}")
    lock = await lock_queries.current_lock(session, user_id=user_id)
    if lock is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"{user_id!r} is not locked")
    command = observed(UnlockAccount(user_id=user_id, requested_by=caller.user_id, reason=body.reason),
                       account_id=user_id, occurred_at=utcnow())
    try:
        await app.broker.publish(LOCK_COMMANDS, command)
    except Exception as error:  # noqa: BLE001 - any broker failure is the same answer to the caller
        log.warning("unlock command for %s not published: %s", user_id, type(error).__name__)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail="the broker did not take the command; retry") from None
    log.info("unlock of %s requested by %s (command %s)", user_id, caller.user_id, command.event_id)
    return UnlockRequestedPublic(command_id=command.event_id, user_id=user_id, lock_id=lock.lock_id,
                                 requested_by=caller.user_id, requested_at=command.occurred_at)
