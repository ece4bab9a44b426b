"""The close executor's ledger (``close_executions``): what was sent, so nothing is sent twice.

A row is inserted as ``sending`` in its own committed transaction before ``order_send``, and
finished afterwards with the outcome. The row keeps the command envelope, so an unresolved row
can be settled after a restart without the command at hand; and the outcome payload, so a
redelivered command is answered again without trading again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.tables import CloseExecution

executions = CloseExecution.__table__
RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class LedgerRow:
    command_id: uuid.UUID
    ticket: int
    user_id: str
    symbol: str
    status: str
    retcode: int | None
    attempts: int
    result: dict[str, Any]
    created_at: datetime


def _row(r: Any) -> LedgerRow:
    return LedgerRow(r.command_id, r.ticket, r.user_id, r.symbol, r.status, r.retcode, r.attempts,
                     r.result or {}, r.created_at)


class Ledger:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def rows_of(self, command_id: uuid.UUID) -> list[LedgerRow]:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                select(executions).where(executions.c.command_id == command_id)
                .order_by(executions.c.created_at))
            return [_row(r) for r in result]

    async def unresolved(self) -> list[LedgerRow]:
        """Rows left in ``sending``: a crash or an unanswered send between the insert and the outcome."""
        async with self.engine.connect() as connection:
            result = await connection.execute(
                select(executions).where(executions.c.status == "sending").order_by(executions.c.created_at))
            return [_row(r) for r in result]

    async def last_close_at(self, *, user_id: str, symbol: str, other_than: uuid.UUID,
                            reason: str | None = None) -> datetime | None:
        """When another command (for ``reason``, if given) last started closing this account's symbol
        (refused commands excluded)."""
        conditions = [executions.c.user_id == user_id, executions.c.symbol == symbol,
                      executions.c.command_id != other_than,
                      executions.c.result["status_detail"].astext.is_distinct_from(RATE_LIMITED)]
        if reason is not None:
            conditions.append(executions.c.result["command"]["payload"]["reason"].astext == reason)
        async with self.engine.connect() as connection:
            return await connection.scalar(select(func.max(executions.c.created_at)).where(and_(*conditions)))

    async def claim(self, *, command_id: uuid.UUID, ticket: int, user_id: str, symbol: str, at: datetime,
                    command: dict[str, Any], status: str = "sending", detail: str | None = None) -> bool:
        """Insert the row; False if this command already has one for this ticket (never execute twice)."""
        statement = insert(executions).values(
            command_id=command_id, ticket=ticket, user_id=user_id, symbol=symbol, status=status,
            result={"command": command, "status_detail": detail}, created_at=at, updated_at=at,
        ).on_conflict_do_nothing().returning(executions.c.ticket)
        async with self.engine.begin() as connection:
            return (await connection.execute(statement)).first() is not None

    async def finish(self, *, command_id: uuid.UUID, ticket: int, status: str, retcode: int | None,
                     attempts: int, outcome: dict[str, Any], at: datetime) -> None:
        async with self.engine.begin() as connection:
            current = await connection.scalar(select(executions.c.result).where(and_(
                executions.c.command_id == command_id, executions.c.ticket == ticket)))
            await connection.execute(update(executions).where(and_(
                executions.c.command_id == command_id, executions.c.ticket == ticket)).values(
                status=status, retcode=retcode, attempts=attempts, updated_at=at,
                result={**(current or {}), "outcome": outcome}))

