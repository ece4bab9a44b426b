"""Reading the event archive back: restoring empty topics at start, and replaying from it.

Restoring: every topic that is empty (the embedded broker keeps memory only, so at each start)
gets its archived events again, partition by partition, in the order they were first archived,
with their exact bytes and keys. The stored progress of every consumer that keeps it with its rows
(the projector, the archiver) is then clamped to what the restored partitions hold, so nothing
new is skipped; their primary keys refuse what they see twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from infra.dburl import plain_url
from infra.internals import refresh_metadata
from infra.kafka import make_consumer, make_producer
from infra.settings import Settings
from schemas.topics import ALL_TOPICS

log = logging.getLogger(__name__)

CHUNK = 5000


@dataclass(frozen=True)
class ArchivedRecord:
    """An archived event in the shape of a consumed record (what the projector reads)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


async def archived(database_url: str, topics: list[str], *, since: datetime | None = None,
                   chunk: int = CHUNK) -> AsyncIterator[list[ArchivedRecord]]:
    """The archived events of ``topics`` in the order they were archived, per partition, in chunks."""
    connection = await asyncpg.connect(plain_url(database_url), timeout=10)
    try:
        async with connection.transaction():
            cursor = connection.cursor(
                'SELECT topic, partition, "offset", key, value FROM event_archive WHERE topic = ANY($1::text[]) '
                'AND ($2::timestamptz IS NULL OR occurred_at >= $2) ORDER BY topic, partition, seq',
                topics, since, prefetch=chunk)
            batch: list[ArchivedRecord] = []
            async for row in cursor:
                batch.append(ArchivedRecord(row["topic"], row["partition"], row["offset"], row["key"], row["value"]))
                if len(batch) >= chunk:
                    yield batch
                    batch = []
            if batch:
                yield batch
    finally:
        await connection.close()


async def empty_topics(settings: Settings, names: list[str]) -> dict[str, list[int]]:
    """The topics among ``names`` that hold no message, with their partitions (read by fetching)."""
    assert settings.kafka_bootstrap_servers
    consumer = make_consumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                             fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms)
    await consumer.start()
    try:
        partitions: dict[str, list[int]] = {}
        for name in names:
            ids = consumer.partitions_for_topic(name)
            if ids is None:
                await refresh_metadata(consumer)
                ids = consumer.partitions_for_topic(name) or set()
            partitions[name] = sorted(ids)
        tps = [TopicPartition(n, p) for n, ps in partitions.items() for p in ps]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        holding: set[str] = set()
        for _ in range(3):
            records = await consumer.getmany(timeout_ms=300, max_records=len(tps) or 1)
            holding |= {tp.topic for tp in records}
        holding |= {tp.topic for tp in tps if (consumer.highwater(tp) or 0) > 0}
        return {n: ps for n, ps in partitions.items() if n not in holding}
    finally:
        await consumer.stop()


async def restore_empty_topics(settings: Settings) -> dict[str, int]:
    """Republish the archive into every empty topic; clamp stored progress; return events per topic."""
    assert settings.kafka_bootstrap_servers and settings.database_url
    names = [t.name(settings.topic_prefix) for t in ALL_TOPICS]
    empty = await empty_topics(settings, names)
    if not empty:
        return {}
    producer = make_producer(settings.kafka_bootstrap_servers, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    restored: dict[str, int] = {}
    ends: dict[tuple[str, int], int] = {(n, p): 0 for n, ps in empty.items() for p in ps}
    try:
        async for batch in archived(settings.database_url, list(empty)):
            sent = []
            for record in batch:
                if (record.topic, record.partition) not in ends:
                    continue  # a partition this broker does not have (fewer partitions than before)
                sent.append(await producer.send(record.topic, record.value, key=record.key,
                                                partition=record.partition))
                ends[(record.topic, record.partition)] += 1
                restored[record.topic] = restored.get(record.topic, 0) + 1
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    await _clamp_progress(settings.database_url, ends)
    if restored:
        log.info("restored %d events into %d empty topics from the archive", sum(restored.values()), len(restored))
    return restored


async def _clamp_progress(database_url: str, ends: dict[tuple[str, int], int]) -> None:
    """No consumer's stored progress may point past what a restored partition holds."""
    connection = await asyncpg.connect(plain_url(database_url), timeout=10)
    try:
        await connection.executemany(
            "UPDATE projection_progress SET next_offset = $3, updated_at = now() "
            "WHERE topic = $1 AND partition = $2 AND next_offset > $3",
            [(topic, partition, end) for (topic, partition), end in ends.items()])
    finally:
        await connection.close()


def as_records(batch: list[ArchivedRecord]) -> dict[TopicPartition, list[Any]]:
    """A chunk of archived events grouped as a fetch would group them."""
    grouped: dict[TopicPartition, list[Any]] = {}
    for record in batch:
        grouped.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
    return grouped
