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
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from infra import metrics
from infra.db import DATABASE_DOWN, while_database_down
from infra.dburl import plain_url
from infra.kafka import dead_letter, group_consumer, make_producer, send_dead_letter
from infra.settings import Settings
from projections import retention
from projections.rows import TABLE_OF_TOPIC, row_for, user_of
from projections.writer import PendingRow, ProjectionWriter, Rejected, projected_topic_names
from schemas import DecodeError, decode
from schemas.topics import topic_by_name

log = logging.getLogger(__name__)

Records = dict[TopicPartition, list[Any]]


@dataclass
class Prepared:
    """A fetched batch, decoded: rows to write, messages nobody can use, progress past them."""

    pending: list[PendingRow] = field(default_factory=list)
    unusable: Rejected = field(default_factory=list)
    received: int = 0
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)


@dataclass
class BatchOutcome:
    received: int = 0
    inserted: int = 0
    dead_lettered: int = 0
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)


class Projector:
    """Turns one fetched batch into rows, dead letters and progress. Shared by live and replay."""

    def __init__(
        self, *, writer: ProjectionWriter, producer: AIOKafkaProducer | None, prefix: str,
        since: datetime | None = None,
    ) -> None:
        """``producer`` None: unusable messages are logged and counted, never dead-lettered (replay:
        the live dead-letter topic belongs to the live consumers)."""
        self.writer = writer
        self.producer = producer
        self.prefix = prefix
        self.since = since  # replay from a point in time: older events are read but not projected

    def prepare_into(self, prepared: Prepared, tp: TopicPartition, messages: list[Any]) -> None:
        """Decode consecutive messages of one partition into ``prepared``."""
        topic = topic_by_name(tp.topic, self.prefix)
        table = TABLE_OF_TOPIC[topic]
        for message in messages:
            try:
                envelope = decode(topic, message.value)
                if self.since is not None and envelope.occurred_at < self.since:
                    continue
                prepared.pending.append(PendingRow(table, row_for(table, envelope), user_of(envelope), message))
            except DecodeError as error:
                prepared.unusable.append((PendingRow(table, (), "", message), error.reason))
        prepared.received += len(messages)
        prepared.next_offsets[tp] = messages[-1].offset + 1

    async def write(self, prepared: Prepared) -> BatchOutcome:
        """Dead-letter what cannot be used, then commit the rows with the progress past them."""
        pending, unusable = prepared.pending, prepared.unusable + await self._without_unknown_users(prepared.pending)
        await self._dead_letter(unusable)
        progress = {(tp.topic, tp.partition): offset for tp, offset in prepared.next_offsets.items()}
        outcome = BatchOutcome(received=prepared.received, dead_lettered=len(unusable),
                               next_offsets=prepared.next_offsets)
        outcome.inserted = await self.writer.write(pending, progress, on_rejected=self._dead_letter)
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
            if self.producer is None:
                continue
            envelope = dead_letter(consumer=self.writer.consumer, topic=source.topic, partition=source.partition,
                                   offset=source.offset, key=source.key, value=source.value, reason=reason)
            await send_dead_letter(self.producer, self.prefix, envelope)
            metrics.dead_letters_total.labels(consumer=self.writer.consumer).inc()

    def _count(self, pending: list[PendingRow], outcome: BatchOutcome) -> None:
        for table in {p.table for p in pending}:
            metrics.projection_events_total.labels(table=table.name).inc(
                sum(1 for p in pending if p.table is table))


class WritePipeline:
    """Decodes the next batch while the database writes the last one.

    The database's share of a batch (the INSERT from staging, the commit) is time the projector
    would otherwise spend waiting. Writes still go one at a time, in fetch order, on the writer's
    one connection, and ``written`` runs after each commit (the live projector commits the
    batch's Kafka offsets there: after the database, as before). ``idle()`` holds back new writes
    and finishes the one in flight, for anything else that uses the writer's connection.
    """

    CHUNK = 250

    def __init__(self, projector: Projector, *, written: Callable[[BatchOutcome], Awaitable[None]]) -> None:
        self.projector = projector
        self.written = written
        self._writing: asyncio.Future[BatchOutcome] | None = None
        self._lock = asyncio.Lock()

    async def put(self, records: Records) -> None:
        """Decode ``records``, wait for the write before them, and start theirs.

        Decoding yields to the event loop every ``CHUNK`` messages, so the write in flight sends
        its next statement (COPY, INSERT, progress, COMMIT: one round trip each) and the
        database works on it meanwhile."""
        prepared = Prepared()
        for tp, messages in records.items():
            for start in range(0, len(messages), self.CHUNK):
                self.projector.prepare_into(prepared, tp, messages[start:start + self.CHUNK])
                await asyncio.sleep(0)
        async with self._lock:
            await self._finish()
            self._writing = asyncio.ensure_future(self.projector.write(prepared))

    async def drain(self) -> None:
        """Wait until the write in flight, if any, is committed and ``written`` has run."""
        async with self.idle():
            pass

    @asynccontextmanager
    async def idle(self) -> AsyncIterator[None]:
        async with self._lock:
            await self._finish()
            yield

    async def _finish(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            await self.written(await writing)


class _SeekToStoredProgress(ConsumerRebalanceListener):
    """On assignment, continue from the progress committed with the rows, not from Kafka's offset.

    A revocation first finishes the write in flight (and commits its offsets, while the
    partitions are still ours)."""

    def __init__(self, consumer: AIOKafkaConsumer, writer: ProjectionWriter, pipeline: WritePipeline) -> None:
        self.consumer = consumer
        self.writer = writer
        self.pipeline = pipeline

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.pipeline.drain()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        async with self.pipeline.idle():
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
    """Run the projector until ``stop`` is set. ``after_db_commit`` lets tests crash at the worst moment.

    A lost database, or a broker it cannot reach (at start, or a commit refused after a lost
    connection), is waited for with backoff; the projector then goes on from its stored progress."""
    assert settings.database_url and settings.kafka_bootstrap_servers, "resolve endpoints before serving"
    await while_database_down(lambda: _project(settings, stop=stop, consumer_name=consumer_name,
                                               after_db_commit=after_db_commit), stop=stop, what=consumer_name,
                              also=(KafkaError,))


async def _project(settings: Settings, *, stop: asyncio.Event, consumer_name: str,
                   after_db_commit: AfterCommit | None) -> None:
    assert settings.database_url and settings.kafka_bootstrap_servers
    topics = projected_topic_names(settings.topic_prefix)
    writer = await ProjectionWriter.connect(plain_url(settings.database_url), consumer=consumer_name)
    producer = make_producer(settings.kafka_bootstrap_servers)
    consumer = group_consumer(settings, name=consumer_name, fetch_max_wait_ms=settings.projection_fetch_max_wait_ms)
    projector = Projector(writer=writer, producer=producer, prefix=settings.topic_prefix)

    async def written(outcome: BatchOutcome) -> None:
        if after_db_commit is not None:
            await after_db_commit(outcome)
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in outcome.next_offsets.items()})
        await _report_lag(consumer, consumer_name)

    pipeline = WritePipeline(projector, written=written)
    consumer.subscribe(topics, listener=_SeekToStoredProgress(consumer, writer, pipeline))
    pruning: asyncio.Task[None] | None = None
    try:
        await producer.start()
        await consumer.start()
        log.info("projector reading %s", ", ".join(topics))
        pruning = asyncio.create_task(retention.serve(settings, stop=stop), name="retention")
        while not stop.is_set():
            records = await consumer.getmany(timeout_ms=200, max_records=settings.projection_batch_size)
            if records:
                await pipeline.put(records)
            else:
                await pipeline.drain()  # nothing new: commit what is written rather than wait
        await pipeline.drain()
    finally:
        if pruning is not None:
            pruning.cancel()
        await consumer.stop()
        await producer.stop()
        with contextlib.suppress(*DATABASE_DOWN):  # already lost: the outage is what is raised
            await writer.close()
