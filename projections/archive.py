"""The archiver: every topic in, ``event_archive`` rows out, like a projection.

Each batch's rows and the progress past them are committed in one transaction (consumer
``archive`` in ``projection_progress``), then the Kafka offsets. A redelivered or restored event
is refused by the primary key (occurred_at, event_id). ``value`` keeps the exact bytes published,
so restoring a topic republishes what consumers saw. A message that is not an envelope is not
archived (its consumers dead-letter it, and the dead letter is archived).

The database may go away: the archiver then waits with backoff and carries on from its stored
progress, never taking a neighbour down.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from pydantic_core import from_json

from infra.db import while_database_down
from infra.dburl import plain_url
from infra.kafka import caught_up, group_consumer
from infra.partitions import ARCHIVE, PartitionMaker
from infra.settings import Settings
from schemas.topics import ALL_TOPICS

log = logging.getLogger(__name__)

CONSUMER = "archive"
DRAIN_SECONDS = 15.0  # at a stop, how long the archiver may read on to the end of the topics
_COLUMNS = ("occurred_at", "event_id", "topic", "partition", "offset", "event_type", "account_id", "key", "value")


@dataclass(frozen=True)
class ArchiveRow:
    occurred_at: datetime
    event_id: uuid.UUID
    topic: str
    partition: int
    offset: int
    event_type: str
    account_id: str
    key: bytes | None
    value: bytes

    def values(self) -> tuple[Any, ...]:
        return (self.occurred_at, self.event_id, self.topic, self.partition, self.offset, self.event_type,
                self.account_id, self.key, self.value)


def _offset_order(row: ArchiveRow) -> tuple[str, int, int]:
    return row.topic, row.partition, row.offset


def archive_row(record: Any) -> ArchiveRow | None:
    """The row of one consumed record; None for a message that is not an envelope (pure).

    Parsed by pydantic's JSON parser (the one ``schemas.codec`` decodes with), a third of
    ``json.loads``'s time for an envelope; it refuses what the consumers' decoding refuses too
    (a lone surrogate escape, another encoding than UTF-8): those are dead-lettered, and archived as such."""
    try:
        envelope = from_json(record.value)
        occurred_at = datetime.fromisoformat(envelope["occurred_at"])
        if occurred_at.tzinfo is None:
            return None
        return ArchiveRow(occurred_at.astimezone(UTC), uuid.UUID(envelope["event_id"]), record.topic,
                          record.partition, record.offset, str(envelope["event_type"])[:128],
                          str(envelope["account_id"])[:64], record.key, record.value)
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


class ArchiveWriter:
    """Writes archive rows and progress in one transaction, on one connection."""

    def __init__(self, connection: asyncpg.Connection, *, consumer: str = CONSUMER) -> None:
        self.connection = connection
        self.consumer = consumer
        self._months = PartitionMaker(ARCHIVE)
        self.lock = asyncio.Lock()  # one connection: a rebalance's progress read waits for the write

    @classmethod
    async def connect(cls, database_url: str, *, consumer: str = CONSUMER) -> ArchiveWriter:
        return cls(await asyncpg.connect(plain_url(database_url), timeout=10), consumer=consumer)

    async def close(self) -> None:
        await self.connection.close()

    async def write(self, rows: list[ArchiveRow], progress: dict[tuple[str, int], int]) -> int:
        """Insert the rows new to the archive and save the progress; returns how many were new."""
        async with self.lock:
            return await self._write(rows, progress)

    async def _write(self, rows: list[ArchiveRow], progress: dict[tuple[str, int], int]) -> int:
        # One time per month is enough to name the partitions (``occurred_at`` is in UTC already).
        await self._months.ensure(self.connection, {(r.occurred_at.year, r.occurred_at.month): r.occurred_at
                                                    for r in rows}.values())
        async with self.connection.transaction():
            inserted = await self._insert(rows) if rows else 0
            if progress:
                await self.connection.executemany(
                    "INSERT INTO projection_progress (consumer, topic, partition, next_offset) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (consumer, topic, partition) DO UPDATE SET "
                    "next_offset = GREATEST(projection_progress.next_offset, EXCLUDED.next_offset), "
                    "updated_at = now()",
                    [(self.consumer, t, p, o) for (t, p), o in progress.items()])
        return inserted

    async def _insert(self, rows: list[ArchiveRow]) -> int:
        """Insert the rows, in offset order (so ``seq`` follows it), skipping events archived already.

        Straight into the archive by COPY when the batch repeats no event: duplicates come only from a
        producer's repeat (the archiver resumes from the progress it committed with the rows), so this
        almost always holds, and it costs PostgreSQL a third less than staging. A COPY that meets an
        archived event is rolled back (to a savepoint) and the batch is staged and inserted with
        ``ON CONFLICT DO NOTHING``."""
        rows = sorted(rows, key=_offset_order)
        if len({(r.occurred_at, r.event_id) for r in rows}) == len(rows):
            try:
                async with self.connection.transaction():
                    await self.connection.copy_records_to_table("event_archive", records=[r.values() for r in rows],
                                                                columns=list(_COLUMNS))
                return len(rows)
            except asyncpg.UniqueViolationError:
                pass  # some were archived already: the staged path skips them
        await self.connection.execute(
            "CREATE TEMP TABLE IF NOT EXISTS stage_event_archive (LIKE event_archive INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS")
        await self.connection.copy_records_to_table("stage_event_archive", records=[r.values() for r in rows],
                                                    columns=list(_COLUMNS))
        columns = ", ".join(f'"{c}"' for c in _COLUMNS)
        # ON CONFLICT DO NOTHING also skips an event's second row within the statement: in offset order,
        # the first one read is the one kept.
        status = await self.connection.execute(
            f"INSERT INTO event_archive ({columns}) SELECT {columns} FROM stage_event_archive "
            f"ORDER BY topic, partition, \"offset\" ON CONFLICT DO NOTHING")
        return int(status.rsplit(" ", 1)[-1])

    async def stored_progress(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        async with self.lock:
            rows = await self.connection.fetch(
                "SELECT topic, partition, next_offset FROM projection_progress WHERE consumer = $1 "
                "AND topic = ANY($2::text[])", self.consumer, list(topics))
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


class _SeekToStoredProgress(ConsumerRebalanceListener):
    def __init__(self, consumer: Any, writer: ArchiveWriter) -> None:
        self.consumer, self.writer = consumer, writer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass  # every batch is committed before the next fetch

    async def on_partitions_assigned(self, assigned: Any) -> None:
        stored = await self.writer.stored_progress({tp.topic for tp in assigned})
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is not None:
                self.consumer.seek(tp, offset)


async def archive_batch(writer: ArchiveWriter, records: dict[TopicPartition, list[Any]]) -> tuple[int, dict]:
    """Archive one fetched batch; returns (rows new to the archive, next offsets)."""
    rows = [row for messages in records.values() for m in messages if (row := archive_row(m)) is not None]
    next_offsets = {tp: messages[-1].offset + 1 for tp, messages in records.items()}
    inserted = await writer.write(rows, {(tp.topic, tp.partition): o for tp, o in next_offsets.items()})
    return inserted, next_offsets


async def serve(settings: Settings, *, stop: asyncio.Event) -> None:
    """Archive every topic until ``stop``; a lost database is waited for with backoff."""
    assert settings.database_url and settings.kafka_bootstrap_servers, "resolve endpoints before serving"
    await while_database_down(lambda: _archive(settings, stop=stop), stop=stop, what="archiver")


async def _archive(settings: Settings, *, stop: asyncio.Event) -> None:
    assert settings.database_url
    writer = await ArchiveWriter.connect(settings.database_url)
    consumer = group_consumer(settings, name=CONSUMER, fetch_max_wait_ms=settings.projection_fetch_max_wait_ms)
    consumer.subscribe([t.name(settings.topic_prefix) for t in ALL_TOPICS],
                       listener=_SeekToStoredProgress(consumer, writer))
    await consumer.start()
    log.info("archiver: every topic into event_archive")
    async def archive_next() -> bool:
        records = await consumer.getmany(timeout_ms=200, max_records=settings.projection_batch_size)
        if records:
            _, next_offsets = await archive_batch(writer, records)
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in next_offsets.items()})
        return bool(records)

    try:
        while not stop.is_set():
            await archive_next()
        # At a stop, read on to the end of every topic: the embedded broker's log dies with the run.
        deadline = asyncio.get_running_loop().time() + DRAIN_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            if not await archive_next() and await caught_up(consumer, consumer.assignment()):
                break
    finally:
        await consumer.stop()
        await writer.close()
