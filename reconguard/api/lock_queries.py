"""Reads of ``account_lock_events``: an account is locked while its latest lock has no unlock.

Shared by the API, the dashboard, the live view, Telegram's /status and the command line.
"""

from __future__ import annotations

from sqlalchemy import Select, and_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from infra.tables import AccountLockEvent

LOCKED, UNLOCKED = "AccountLocked", "AccountUnlocked"


def _open_locks() -> Select[tuple[AccountLockEvent]]:
    unlock = aliased(AccountLockEvent)
    ended = select(unlock.id).where(and_(unlock.lock_id == AccountLockEvent.lock_id, unlock.event_type == UNLOCKED))
    return select(AccountLockEvent).where(AccountLockEvent.event_type == LOCKED, ~ended.exists())


async def current_lock(session: AsyncSession, *, user_id: str) -> AccountLockEvent | None:
    """The account's lock in force (its AccountLocked row), or None."""
    query = _open_locks().where(AccountLockEvent.user_id == user_id)
    return (await session.scalars(query.order_by(AccountLockEvent.created_at.desc()).limit(1))).first()


async def current_locks(session: AsyncSession, *, limit: int) -> list[AccountLockEvent]:
    """Every lock in force, newest first."""
    query = _open_locks().order_by(AccountLockEvent.created_at.desc()).limit(limit)
    return list(await session.scalars(query))


async def lock_history(session: AsyncSession, *, user_id: str, limit: int) -> list[AccountLockEvent]:
    """The account's locks and unlocks, newest first."""
    query = select(AccountLockEvent).where(AccountLockEvent.user_id == user_id)
    return list(await session.scalars(query.order_by(AccountLockEvent.created_at.desc()).limit(limit)))
