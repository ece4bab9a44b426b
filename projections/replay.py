"""Rebuild the projections from the log (or from the event archive) into a fresh database or schema.

The identities (``users``) are copied from the source database first, as the rows refer to
them; then every projected topic is read from its beginning, without a consumer group, until
each partition reaches its high watermark (as fetch responses report it: tansu's ListOffsets
answer is not reliable). Rows carry only event data, so two replays give identical tables.
``replay_archive`` reads the same events from ``event_archive`` instead, so history older than the
broker's retention (or than the embedded broker's run) can be replayed too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiokafka import TopicPartition

from infra.db import migrate
from infra.dburl import plain_url, with_database
from infra.internals import refresh_metadata
from infra.kafka import caught_up, make_consumer
from infra.settings import Settings
from projections.history import archived, as_records
from projections.projector import BatchOutcome, Projector, Records, WritePipeline
from projections.rows import TABLE_OF_TOPIC
from projections.writer import ProjectionWriter, projected_topic_names

Progress = Callable[[int, int | None], None]
"""Called with (events read so far, events in the log or None while unknown)."""

_IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"


class ReplayError(RuntimeError):
    pass


@dataclass(frozen=True)
class ReplayTarget:
    database_url: str
    schema: str | None


@dataclass(frozen=True)
class ReplayResult:
    events_read: int
    rows_inserted: int
    dead_lettered: int
    target: ReplayTarget


@dataclass
class _Counts:
    read: int = 0
    inserted: int = 0
    dead: int = 0

    def add(self, outcome: BatchOutcome) -> None:
        self.read += outcome.received
        self.inserted += outcome.inserted
        self.dead += outcome.dead_lettered

    def result(self, target: ReplayTarget) -> ReplayResult:
        return ReplayResult(self.read, self.inserted, self.dead, target)


def _check_identifier(name: str) -> str:
    import re

    if not re.match(_IDENTIFIER, name):
        raise ReplayError(f"{name!r} is not a plain lower-case identifier")
    return name


async def prepare_target(source_url: str, *, database: str | None = None, schema: str | None = None,
                         replace: bool = False) -> ReplayTarget:
    """Create the fresh database or schema (refusing an existing one unless ``replace``) and migrate it."""
    if (database is None) == (schema is None):
        raise ReplayError("give exactly one of a target database or a target schema")
    admin = await asyncpg.connect(plain_url(with_database(source_url, "postgres")))
    try:
        if database is not None:
            await _fresh_database(admin, _check_identifier(database), replace)
            target = ReplayTarget(with_database(source_url, database), None)
        else:
            target = ReplayTarget(source_url, _check_identifier(schema or ""))
    finally:
        await admin.close()
    if target.schema is not None:
        await _fresh_schema(source_url, target.schema, replace)
    await asyncio.to_thread(migrate, target.database_url, schema=target.schema)
    return target


async def _fresh_database(admin: asyncpg.Connection, name: str, replace: bool) -> None:
    exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
    if exists and not replace:
        raise ReplayError(f"database {name!r} exists; replay builds a fresh one (use --replace to drop it)")
    if exists:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')


async def _fresh_schema(url: str, name: str, replace: bool) -> None:
    if name == "public":
        raise ReplayError("replay never writes into the public schema")
    connection = await asyncpg.connect(plain_url(url))
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", name)
        if exists and not replace:
            raise ReplayError(f"schema {name!r} exists; replay builds a fresh one (use --replace to drop it)")
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


async def copy_identities(source_url: str, target: ReplayTarget) -> int:
    source = await asyncpg.connect(plain_url(source_url))
    try:
        rows = await source.fetch("SELECT * FROM public.users")
    finally:
        await source.close()
    settings = {"search_path": target.schema} if target.schema else None
    destination = await asyncpg.connect(plain_url(target.database_url), server_settings=settings)
    try:
        if rows:
            await destination.copy_records_to_table("users", records=[tuple(r.values()) for r in rows],
                                                    columns=list(rows[0].keys()))
    finally:
        await destination.close()
    return len(rows)


async def replay(
    settings: Settings, target: ReplayTarget, *, since: datetime | None = None, progress: Progress | None = None,
) -> ReplayResult:
    """Project every event of the log (occurred at or after ``since``) into ``target``."""
    assert settings.kafka_bootstrap_servers and settings.database_url
    await copy_identities(settings.database_url, target)
    writer = await ProjectionWriter.connect(plain_url(target.database_url), consumer="replay", schema=target.schema)
    consumer = make_consumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                             fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms)
    await consumer.start()
    try:
        partitions = await _assign_all(consumer, projected_topic_names(settings.topic_prefix))
        # No producer: replay writes nothing to Kafka, least of all to the live dead-letter topic.
        projector = Projector(writer=writer, producer=None, prefix=settings.topic_prefix, since=since)
        return await _read_to_the_end(consumer, projector, partitions, target, progress)
    finally:
        await consumer.stop()
        await writer.close()


async def replay_archive(
    settings: Settings, target: ReplayTarget, *, since: datetime | None = None, progress: Progress | None = None,
) -> ReplayResult:
    """Project every archived event of the projected topics (occurred at or after ``since``) into ``target``."""
    assert settings.kafka_bootstrap_servers and settings.database_url
    await copy_identities(settings.database_url, target)
    writer = await ProjectionWriter.connect(plain_url(target.database_url), consumer="replay", schema=target.schema)
    counts = _Counts()

    async def written(outcome: BatchOutcome) -> None:
        counts.add(outcome)
        if progress is not None:
            progress(counts.read, None)

    try:
        # No producer, as for ``replay``: nothing goes to Kafka, least of all to the live dead-letter topic.
        projector = Projector(writer=writer, producer=None, prefix=settings.topic_prefix, since=since)
        pipeline = WritePipeline(projector, written=written)
        async for batch in archived(settings.database_url, projected_topic_names(settings.topic_prefix), since=since):
            await pipeline.put(as_records(batch))
        await pipeline.drain()
    finally:
        await writer.close()
    return counts.result(target)


async def _assign_all(consumer, topics: list[str]) -> list[TopicPartition]:
    partitions = []
    for topic in topics:
        ids = consumer.partitions_for_topic(topic)
        if ids is None:
            await refresh_metadata(consumer)
            ids = consumer.partitions_for_topic(topic) or set()
        partitions += [TopicPartition(topic, p) for p in sorted(ids)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    return partitions


async def _read_to_the_end(consumer, projector: Projector, partitions: list[TopicPartition],
                           target: ReplayTarget, progress: Progress | None) -> ReplayResult:
    counts = _Counts()

    async def written(outcome: BatchOutcome) -> None:
        counts.add(outcome)

    pipeline = WritePipeline(projector, written=written)
    while True:
        records: Records = await consumer.getmany(timeout_ms=500, max_records=5000)
        if records:
            await pipeline.put(records)
        if progress is not None:
            progress(counts.read, _total(consumer, partitions))
        if not records and await caught_up(consumer, partitions):
            await pipeline.drain()
            if progress is not None:
                progress(counts.read, _total(consumer, partitions))
            return counts.result(target)


def _total(consumer, partitions: list[TopicPartition]) -> int | None:
    marks = [consumer.highwater(tp) for tp in partitions]
    return None if any(m is None for m in marks) else sum(marks)


async def table_checksums(database_url: str, *, schema: str | None = None) -> dict[str, str]:
    """An md5 of every projected table's rows in id order: equal checksums, identical tables."""
    settings = {"search_path": schema} if schema else None
    connection = await asyncpg.connect(plain_url(database_url), server_settings=settings)
    try:
        return {
            table.name: await connection.fetchval(
                f"SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t.id)), 'empty') FROM {table.name} t")
            for table in TABLE_OF_TOPIC.values()
        }
    finally:
        await connection.close()
