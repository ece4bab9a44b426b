"""The projector: topics in, Postgres rows out, in batches, idempotently.

Order of effects for every batch, so a crash at any point loses nothing and doubles nothing:
1. decode; messages nobody can use are sent to the dead-letter topic (and acknowledged);
2. rows and progress are committed in one database transaction;
3. only then is the Kafka offset committed.
A crash between 2 and 3 re-delivers the batch; on (re)assignment the consumer seeks to the
progress stored in the database, and the primary keys refuse anything seen twice anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from projections.rows import TABLE_OF_TOPIC, row_for, user_of
from projections.writer import PendingRow, ProjectionWriter, Rejected, projected_topic_names
from reconguard import metrics
from reconguard.dburl import plain_url
from reconguard.kafka import dead_letter, group_consumer, make_producer, send_dead_letter
from reconguard.settings import Settings
from schemas import DecodeError, decode
from schemas.topics import topic_by_name

log = logging.getLogger(__name__)

Records = dict[TopicPartition, list[Any]]


@dataclass
class BatchOutcome:
    received: int = 0
    inserted: int = 0
    dead_lettered: int = 0
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)


class Projector:
    """Turns one fetched batch into rows, dead letters and progress. Shared by live and replay."""

    def __init__(
        self, *, writer: ProjectionWriter, producer: AIOKafkaProducer, prefix: str, since: datetime | None = None,
    ) -> None:
        self.writer = writer
        self.producer = producer
        self.prefix = prefix
        self.since = since  # replay from a point in time: older events are read but not projected

    async def handle(self, records: Records) -> BatchOutcome:
        outcome = BatchOutcome()
        pending: list[PendingRow] = []
        unusable: Rejected = []
        for tp, messages in records.items():
            topic = topic_by_name(tp.topic, self.prefix)
            table = TABLE_OF_TOPIC[topic]
            for message in messages:
                outcome.received += 1
                try:
                    envelope = decode(topic, message.value)
                    if self.since is not None and envelope.occurred_at < self.since:
                        continue
                    pending.append(PendingRow(table, row_for(table, envelope), user_of(envelope), message))
                except DecodeError as error:
                    unusable.append((PendingRow(table, (), "", message), error.reason))
            outcome.next_offsets[tp] = messages[-1].offset + 1
        unusable += await self._without_unknown_users(pending)
        await self._dead_letter(unusable)
        progress = {(tp.topic, tp.partition): offset for tp, offset in outcome.next_offsets.items()}
        outcome.inserted = await self.writer.write(pending, progress, on_rejected=self._dead_letter)
        outcome.dead_lettered = len(unusable)
        self._count(pending, outcome)
        return outcome

    async def _without_unknown_users(self, pending: list[PendingRow]) -> Rejected:
        """Remove (in place) rows of users the project does not know; return them as rejected."""
        unknown = await self.writer.unknown_users({p.user_id for p in pending})
        if not unknown:
            return []
        rejected = [(p, f"unknown user {p.user_id!r}") for p in pending if p.user_id in unknown]
        pending[:] = [p for p in pending if p.user_id not in unknown]
        return rejected

    async def _dead_letter(self, rejected: Rejected) -> None:
        for item, reason in rejected:
            source = item.source
            log.warning("dead-lettering %s[%s]@%s: %s", source.topic, source.partition, source.offset, reason)
            envelope = dead_letter(consumer=self.writer.consumer, topic=source.topic, partition=source.partition,
                                   offset=source.offset, key=source.key, value=source.value, reason=reason)
            await send_dead_letter(self.producer, self.prefix, envelope)
            metrics.dead_letters_total.labels(consumer=self.writer.consumer).inc()

    def _count(self, pending: list[PendingRow], outcome: BatchOutcome) -> None:
        for table in {p.table for p in pending}:
            metrics.projection_events_total.labels(table=table.name).inc(
                sum(1 for p in pending if p.table is table))


class _SeekToStoredProgress(ConsumerRebalanceListener):
    """On assignment, continue from the progress committed with the rows, not from Kafka's offset."""

    def __init__(self, consumer: AIOKafkaConsumer, writer: ProjectionWriter) -> None:
        self.consumer = consumer
        self.writer = writer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        stored = await self.writer.stored_progress({tp.topic for tp in assigned})
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is not None:
                self.consumer.seek(tp, offset)


AfterCommit = Callable[[BatchOutcome], Awaitable[None]]


async def _report_lag(consumer: AIOKafkaConsumer, name: str) -> None:
    """How far behind the end of each topic the projector is (from fetch high watermarks)."""
    behind: dict[str, int] = {}
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is not None:
            behind[tp.topic] = behind.get(tp.topic, 0) + max(0, highwater - await consumer.position(tp))
    for topic, lag in behind.items():
        metrics.consumer_lag_messages.labels(consumer=name, topic=topic).set(lag)


async def serve(
    settings: Settings, *, stop: asyncio.Event, consumer_name: str = "projector",
    after_db_commit: AfterCommit | None = None,
) -> None:
    """Run the projector until ``stop`` is set. ``after_db_commit`` lets tests crash at the worst moment."""
    assert settings.database_url and settings.kafka_bootstrap_servers, "resolve endpoints before serving"
    topics = projected_topic_names(settings.topic_prefix)
    writer = await ProjectionWriter.connect(plain_url(settings.database_url), consumer=consumer_name)
    producer = make_producer(settings.kafka_bootstrap_servers)
    consumer = group_consumer(settings, name=consumer_name)
    consumer.subscribe(topics, listener=_SeekToStoredProgress(consumer, writer))
    await producer.start()
    await consumer.start()
    projector = Projector(writer=writer, producer=producer, prefix=settings.topic_prefix)
    log.info("projector reading %s", ", ".join(topics))
    try:
        while not stop.is_set():
            records = await consumer.getmany(timeout_ms=200, max_records=settings.projection_batch_size)
            if not records:
                continue
            outcome = await projector.handle(records)
            if after_db_commit is not None:
                await after_db_commit(outcome)
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in outcome.next_offsets.items()})
            await _report_lag(consumer, consumer_name)
    finally:
        await consumer.stop()
        await producer.stop()
        await writer.close()
