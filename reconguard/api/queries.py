"""Reads of the projections for the API, the dashboard and Telegram's /status.

Every query is bound to one user and bounded by a limit; filters arrive already validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, and_, cast, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from infra.tables import PositionSnapshot, ReconciliationLog, User
from reconguard.api.pagination import Cursor

CLOSE_EVENT = "PositionCloseRecorded"


@dataclass(frozen=True)
class TimeRange:
    since: datetime | None = None
    until: datetime | None = None


def _page(query: Select, model: Any, *, window: TimeRange, cursor: Cursor | None, limit: int) -> Select:
    if window.since is not None:
        query = query.where(model.created_at >= window.since)
    if window.until is not None:
        query = query.where(model.created_at < window.until)
    if cursor is not None:
        query = query.where(tuple_(model.created_at, model.id) < tuple_(cursor.created_at, cursor.id))
    return query.order_by(model.created_at.desc(), model.id.desc()).limit(limit)


async def get_user(session: AsyncSession, *, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def list_users(session: AsyncSession, *, limit: int) -> list[User]:
    return list((await session.scalars(select(User).order_by(User.id).limit(limit))).all())


async def page(
    session: AsyncSession,
    table: type[Any],
    *,
    user_id: str,
    window: TimeRange = TimeRange(),
    cursor: Cursor | None = None,
    limit: int,
    **equal_to: str | None,
) -> list[Any]:
    """One page of a projection table's rows of ``user_id``, newest first; each ``column=value``
    given (not None) must match."""
    query = select(table).where(table.user_id == user_id)
    for column, value in equal_to.items():
        if value is not None:
            query = query.where(getattr(table, column) == value)
    query = _page(query, table, window=window, cursor=cursor, limit=limit)
    return list((await session.scalars(query)).all())


async def latest_snapshot(session: AsyncSession, *, user_id: str) -> PositionSnapshot | None:
    query = (
        select(PositionSnapshot)
        .where(PositionSnapshot.user_id == user_id)
        .order_by(PositionSnapshot.created_at.desc(), PositionSnapshot.id.desc())
        .limit(1)
    )
    return (await session.scalars(query)).first()


def _latest_per_position(user_id: str) -> Select:
    """Each position's (or, before it has one, each expected trade's) most recent outcome."""
    log = ReconciliationLog
    key = func.coalesce(cast(log.mt5_position_id, String), literal("signal:") + log.signal_id)
    return (
        select(log)
        .where(log.user_id == user_id, or_(log.mt5_position_id.is_not(None), log.signal_id.is_not(None)))
        .distinct(key)
        .order_by(key, log.created_at.desc(), log.id.desc())
    )


async def latest_outcomes(
    session: AsyncSession,
    *,
    user_id: str,
    limit: int,
    only_divergences: bool = False,
) -> list[ReconciliationLog]:
    latest = _latest_per_position(user_id).subquery()
    query = select(ReconciliationLog).join(latest, and_(ReconciliationLog.id == latest.c.id))
    if only_divergences:
        query = query.where(latest.c.status == "divergence")
    query = query.order_by(latest.c.created_at.desc(), latest.c.id.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def open_divergence_count(session: AsyncSession, *, user_id: str) -> int:
    latest = _latest_per_position(user_id).subquery()
    query = select(func.count()).select_from(latest).where(latest.c.status == "divergence")
    return int((await session.execute(query)).scalar_one())


async def series(session: AsyncSession, *, user_id: str, points: int) -> list[PositionSnapshot]:
    """The last ``points`` snapshots, oldest first (for a chart)."""
    rows = await page(session, PositionSnapshot, user_id=user_id, limit=points)
    return rows[::-1]


async def recent_closes(session: AsyncSession, *, user_id: str, limit: int) -> list[ReconciliationLog]:
    return await page(session, ReconciliationLog, user_id=user_id, limit=limit, event_type=CLOSE_EVENT)


async def user_for_chat(session: AsyncSession, *, chat_id: int) -> User | None:
    query = select(User).where(User.telegram_chat_id == chat_id).order_by(User.id).limit(1)
    return (await session.scalars(query)).first()
