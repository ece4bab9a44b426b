"""Writes a batch of rows and the consumer's progress in one Postgres transaction.

Rows go in with ``COPY`` into a temporary staging table, then one ``INSERT … SELECT … ON
CONFLICT (id) DO NOTHING`` per table: close to raw COPY speed, and a redelivered event (same
id) is refused by the primary key. A table whose rows change state (``TableSpec.updates``:
``drawdown_alerts``, one row per alert) keeps, per id, the state of the highest ``revision``: a
redelivered or replayed older state never overwrites a newer one, so a replay ends the same. Progress (the next offset per topic partition) is upserted
in the same transaction, so rows and progress can never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from infra.partitions import PartitionMaker
from projections.rows import PROJECTED_TOPICS, TABLE_OF_TOPIC, TableSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingRow:
    """A row to write and where it came from (for the dead-letter topic if the database refuses it)."""

    table: TableSpec
    row: tuple[Any, ...]
    user_id: str
    source: Any  # aiokafka ConsumerRecord


Rejected = list[tuple[PendingRow, str]]
OnRejected = Callable[[Rejected], Awaitable[None]]


class ProjectionWriter:
    """Owns one connection (temporary staging tables live per connection)."""

    def __init__(self, connection: asyncpg.Connection, *, consumer: str) -> None:
        self.connection = connection
        self.consumer = consumer
        self._known_users: set[str] = set()
        self._partitions = {t.name: PartitionMaker(t.partitioning) for t in TABLE_OF_TOPIC.values() if t.partitioning}

    @classmethod
    async def connect(cls, dsn: str, *, consumer: str, schema: str | None = None) -> "ProjectionWriter":
        settings = {"search_path": schema} if schema else None
        connection = await asyncpg.connect(dsn, server_settings=settings)
        writer = cls(connection, consumer=consumer)
        await writer._create_staging_tables()
        return writer

    async def close(self) -> None:
        await self.connection.close()

    async def _create_staging_tables(self) -> None:
        for table in TABLE_OF_TOPIC.values():
            await self.connection.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS stage_{table.name} "
                f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")

    async def stored_progress(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        rows = await self.connection.fetch(
            "SELECT topic, partition, next_offset FROM projection_progress WHERE consumer = $1 "
            "AND topic = ANY($2::text[])", self.consumer, list(topics))
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    async def unknown_users(self, user_ids: Iterable[str]) -> set[str]:
        """Users not in ``users`` (rows for them would break the foreign key)."""
        wanted = set(user_ids) - self._known_users
        if wanted:
            rows = await self.connection.fetch("SELECT id FROM users WHERE id = ANY($1::text[])", list(wanted))
            self._known_users.update(r["id"] for r in rows)
        return set(user_ids) - self._known_users

    async def write(
        self, pending: Sequence[PendingRow], progress: dict[tuple[str, int], int], *, on_rejected: OnRejected,
    ) -> int:
        """Write rows and progress atomically; rows the database refuses go to ``on_rejected`` first.

        Returns how many rows were new (duplicates are refused silently by the primary key).
        """
        await self._ensure_partitions(pending)
        try:
            async with self.connection.transaction():
                inserted = await self._copy_and_insert(pending)
                await self._save_progress(progress)
            return inserted
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as error:
            log.warning("batch refused (%s); writing it row by row to isolate the bad rows", error)
        return await self._write_row_by_row(pending, progress, on_rejected)

    async def _ensure_partitions(self, pending: Sequence[PendingRow]) -> None:
        for table in {p.table for p in pending if p.table.partitioning}:
            maker = self._partitions[table.name]
            at = table.columns.index(maker.partitioning.column)
            await maker.ensure(self.connection, (p.row[at] for p in pending if p.table is table))

    async def _copy_and_insert(self, pending: Sequence[PendingRow]) -> int:
        inserted = 0
        for table in {p.table for p in pending}:
            rows = [p.row for p in pending if p.table is table]
            await self.connection.copy_records_to_table(f"stage_{table.name}", records=rows,
                                                        columns=list(table.columns))
            columns = ", ".join(table.columns)
            status = await self.connection.execute(
                f"INSERT INTO {table.name} ({columns}) {_staged(table)} {_on_conflict(table)}")
            inserted += int(status.rsplit(" ", 1)[-1])
        return inserted

    async def _insert_one(self, item: PendingRow) -> int:
        columns = ", ".join(item.table.columns)
        placeholders = ", ".join(f"${i}" for i in range(1, len(item.table.columns) + 1))
        status = await self.connection.execute(
            f"INSERT INTO {item.table.name} ({columns}) VALUES ({placeholders}) {_on_conflict(item.table)}",
            *item.row)
        return int(status.rsplit(" ", 1)[-1])

    async def _write_row_by_row(
        self, pending: Sequence[PendingRow], progress: dict[tuple[str, int], int], on_rejected: OnRejected,
    ) -> int:
        inserted, rejected = 0, []
        async with self.connection.transaction():
            for item in pending:
                try:
                    async with self.connection.transaction():  # a savepoint per row
                        inserted += await self._insert_one(item)
                except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as error:
                    rejected.append((item, f"database refused the row: {error}"))
            if rejected:
                await on_rejected(rejected)  # acknowledged before the progress that skips them commits
            await self._save_progress(progress)
        return inserted

    async def _save_progress(self, progress: dict[tuple[str, int], int]) -> None:
        if not progress:
            return
        await self.connection.executemany(
            "INSERT INTO projection_progress (consumer, topic, partition, next_offset) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (consumer, topic, partition) DO UPDATE SET "
            "next_offset = GREATEST(projection_progress.next_offset, EXCLUDED.next_offset), updated_at = now()",
            [(self.consumer, topic, partition, offset) for (topic, partition), offset in progress.items()])


def _staged(table: TableSpec) -> str:
    """The staged rows to insert. For a table of states, several states of one row in a batch end as if
    written one by one: the columns a state does not update come from the first (lowest revision), the
    updated ones from the last, so a live table and a replay (other batch boundaries) agree."""
    if not table.updates:
        return f"SELECT {', '.join(table.columns)} FROM stage_{table.name}"
    picked = ", ".join("id" if c == "id" else f"last.{c}" if c in table.updates else f"first.{c}"
                       for c in table.columns)
    return (f"SELECT {picked} FROM (SELECT DISTINCT ON (id) * FROM stage_{table.name} ORDER BY id, revision) first "
            f"JOIN (SELECT DISTINCT ON (id) * FROM stage_{table.name} ORDER BY id, revision DESC) last USING (id)")


def _on_conflict(table: TableSpec) -> str:
    """A repeated id: refused; or, for a table of states, the newer state (higher revision) wins."""
    key = ", ".join(table.key)
    if not table.updates:
        return f"ON CONFLICT ({key}) DO NOTHING"
    assignments = ", ".join(f"{column} = EXCLUDED.{column}" for column in table.updates)
    return f"ON CONFLICT ({key}) DO UPDATE SET {assignments} WHERE {table.name}.revision < EXCLUDED.revision"


def projected_topic_names(prefix: str) -> list[str]:
    return [topic.name(prefix) for topic in PROJECTED_TOPICS]
