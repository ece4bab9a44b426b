"""The close executor's ledger: what was sent, so nothing is sent twice.

``LogLedger`` is what the executor consults: the close-results topic says what is done, so the
close path needs only the broker and the terminal. ``Ledger`` (``close_executions``) is its
projection in PostgreSQL, written behind; when the database answers, it also tells what a crash
left in ``sending``.

A row is inserted as ``sending`` in its own committed transaction before ``order_send``, and
finished afterwards with the outcome. The row keeps the command envelope, so an unresolved row
can be settled after a restart without the command at hand; and the outcome payload, so a
redelivered command is answered again without trading again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition
from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.internals import refresh_metadata
from infra.kafka import caught_up, make_consumer
from infra.tables import CloseExecution
from schemas import DecodeError, Envelope, decode
from schemas.results import PositionClosed, PositionCloseFailed, PositionCloseSuperseded
from schemas.topics import CLOSE_RESULTS

log = logging.getLogger(__name__)

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


    async def project(self, rows: list[LedgerRow]) -> None:
        """Write finished rows learnt from the log (the ledger is a projection of close-results)."""
        if not rows:
            return
        statement = insert(executions).values([dict(
            command_id=r.command_id, ticket=r.ticket, user_id=r.user_id, symbol=r.symbol, status=r.status,
            retcode=r.retcode, attempts=r.attempts, result=r.result, created_at=r.created_at,
            updated_at=r.created_at) for r in rows])
        statement = statement.on_conflict_do_update(
            index_elements=[executions.c.command_id, executions.c.ticket],
            set_={"status": statement.excluded.status, "retcode": statement.excluded.retcode,
                  "attempts": statement.excluded.attempts, "result": statement.excluded.result,
                  "updated_at": statement.excluded.updated_at},
            where=executions.c.status == "sending")
        async with self.engine.begin() as connection:
            await connection.execute(statement)


# --- the log as the executor's memory -------------------------------------------------------------------------

def row_of_result(envelope: Envelope[Any]) -> LedgerRow:
    """The ledger row a published close result stands for (pure)."""
    r = envelope.payload
    refused = isinstance(r, PositionCloseFailed) and (r.error_message or "").startswith("rate limited")
    status = ("closed" if isinstance(r, PositionClosed) else
              "not_found" if isinstance(r, PositionCloseSuperseded) else "failed")  # Attempted.ledger_status
    return LedgerRow(r.command_id, r.ticket, r.user_id, r.symbol, status, r.retcode, r.attempts,
                     {"outcome": envelope.model_dump(mode="json"), "status_detail": RATE_LIMITED if refused else None},
                     envelope.occurred_at)


def _reason(row: LedgerRow) -> str | None:
    """The close reason of a row: from its command (claimed here) or its result (learned from the log)."""
    recorded = row.result.get("command") or row.result.get("outcome") or {}
    return recorded.get("payload", {}).get("reason")


class LogLedger:
    """The executor's ledger, kept from the log: a command whose result is on close-results is done.

    ``load`` reads close-results to its end (the broker is all the close path needs); claims and
    outcomes live in memory and are written behind to the database ledger (``Ledger``), which is a
    projection: a database that is down delays that write, never a close. Rows a crash left in
    ``sending`` are read from the database when it answers, and settled against the terminal.
    """

    def __init__(self, database: Ledger | None, *, retry_initial: float = 0.5, retry_max: float = 30.0) -> None:
        self.database = database
        self.rows: dict[tuple[uuid.UUID, int], LedgerRow] = {}
        self._pending: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._retry = (retry_initial, retry_max)
        self._writer: asyncio.Task[None] | None = None
        self.database_sending_read = False

    async def load(self, *, bootstrap_servers: str, topic: str, fetch_max_wait_ms: int = 50) -> int:
        """Read every close result on the log; returns how many."""
        consumer = make_consumer(bootstrap_servers=bootstrap_servers, group_id=None, fetch_max_wait_ms=fetch_max_wait_ms)
        await consumer.start()
        count = 0
        try:
            ids = consumer.partitions_for_topic(topic)
            if ids is None:
                await refresh_metadata(consumer)
                ids = consumer.partitions_for_topic(topic) or set()
            partitions = [TopicPartition(topic, p) for p in sorted(ids)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while True:
                records = await consumer.getmany(timeout_ms=300, max_records=5000)
                for messages in records.values():
                    for message in messages:
                        with contextlib.suppress(DecodeError):
                            self._learn(row_of_result(decode(CLOSE_RESULTS, message.value)))
                            count += 1
                if not records and await caught_up(consumer, partitions):
                    break
        finally:
            await consumer.stop()
        self._enqueue("project", [r for r in self.rows.values() if r.status != "sending"])
        await self._read_database_sending(timeout=3.0)
        return count

    def _learn(self, row: LedgerRow) -> None:
        self.rows[(row.command_id, row.ticket)] = row

    async def _read_database_sending(self, *, timeout: float) -> None:
        """Rows left in ``sending`` by a crash while the database was up (once it answers)."""
        if self.database is None or self.database_sending_read:
            return
        try:
            found = await asyncio.wait_for(self.database.unresolved(), timeout)
        except Exception as error:
            log.warning("executor ledger: database unavailable (%r); its unresolved rows are read later", error)
            return
        self.database_sending_read = True
        for row in found:
            self.rows.setdefault((row.command_id, row.ticket), row)

    # --- the interface of Ledger ------------------------------------------------------------------------

    async def rows_of(self, command_id: uuid.UUID) -> list[LedgerRow]:
        return sorted((r for (c, _), r in self.rows.items() if c == command_id), key=lambda r: r.created_at)

    async def unresolved(self) -> list[LedgerRow]:
        await self._read_database_sending(timeout=1.0)
        return sorted((r for r in self.rows.values() if r.status == "sending"), key=lambda r: r.created_at)

    async def last_close_at(self, *, user_id: str, symbol: str, other_than: uuid.UUID,
                            reason: str | None = None) -> datetime | None:
        times = [r.created_at for r in self.rows.values() if r.user_id == user_id and r.symbol == symbol
                 and r.command_id != other_than and r.result.get("status_detail") != RATE_LIMITED
                 and (reason is None or _reason(r) == reason)]
        return max(times, default=None)

    async def claim(self, *, command_id: uuid.UUID, ticket: int, user_id: str, symbol: str, at: datetime,
                    command: dict[str, Any], status: str = "sending", detail: str | None = None) -> bool:
        if (command_id, ticket) in self.rows:
            return False
        self._learn(LedgerRow(command_id, ticket, user_id, symbol, status, None, 0,
                              {"command": command, "status_detail": detail}, at))
        self._enqueue("claim", dict(command_id=command_id, ticket=ticket, user_id=user_id, symbol=symbol, at=at,
                                    command=command, status=status, detail=detail))
        return True

    async def finish(self, *, command_id: uuid.UUID, ticket: int, status: str, retcode: int | None,
                     attempts: int, outcome: dict[str, Any], at: datetime) -> None:
        row = self.rows[(command_id, ticket)]
        self._learn(LedgerRow(command_id, ticket, row.user_id, row.symbol, status, retcode, attempts,
                              {**row.result, "outcome": outcome}, row.created_at))
        self._enqueue("finish", dict(command_id=command_id, ticket=ticket, status=status, retcode=retcode,
                                     attempts=attempts, outcome=outcome, at=at))

    # --- writing behind to the database -----------------------------------------------------------------

    def _enqueue(self, operation: str, arguments: Any) -> None:
        if self.database is not None:
            self._pending.put_nowait((operation, arguments))

    async def write_behind(self, stop: asyncio.Event) -> None:
        """Apply queued writes to the database in order; wait with backoff while it is down."""
        assert self.database is not None
        delay = self._retry[0]
        while not stop.is_set() or not self._pending.empty():
            try:
                operation, arguments = await asyncio.wait_for(self._pending.get(), 0.5)
            except TimeoutError:
                continue
            while True:
                try:
                    await asyncio.wait_for(self._apply(operation, arguments), 10)
                    delay = self._retry[0]
                    break
                except IntegrityError as error:
                    log.error("executor ledger: the database refused %s (%s); dropped", operation, error.orig)
                    break
                except Exception as error:
                    if stop.is_set():
                        log.warning("executor ledger: %d writes not projected (database down at stop); the "
                                    "log has them", self._pending.qsize() + 1)
                        return
                    log.warning("executor ledger: database unavailable (%r); again in %.1f s", error, delay)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    delay = min(self._retry[1], delay * 2)

    async def _apply(self, operation: str, arguments: Any) -> None:
        assert self.database is not None
        if operation == "claim":
            await self.database.claim(**arguments)
        elif operation == "finish":
            await self.database.finish(**arguments)
        else:
            await self.database.project(arguments)
