"""Verify the live projections against a replay of the log, row by row, on a running system.

The live tables and the progress committed with them are read in one repeatable-read snapshot;
the replay (into a fresh schema) then reads exactly up to that progress, partition by partition,
so both sides cover the same events however far the live projector has gone meanwhile. Each
table is compared by row id (the id of the event it was made from) and by content:
- lost: a row the replay has and the live table does not;
- extra: a live row the replay does not make (a doubled or invented row);
- changed: the same id with different content.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from aiokafka import TopicPartition

from infra.dburl import plain_url
from infra.kafka import make_consumer, make_producer
from infra.settings import Settings
from projections.projector import BatchOutcome, Projector, WritePipeline
from projections.replay import ReplayTarget, copy_identities, prepare_target
from projections.rows import TABLE_OF_TOPIC
from projections.writer import ProjectionWriter

LIVE_CONSUMER = "projector"
TABLES = tuple(table.name for table in TABLE_OF_TOPIC.values())
Rows = dict[str, str]  # id -> md5 of the row


@dataclass(frozen=True)
class TableDiff:
    table: str
    live: int
    replayed: int
    lost: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return len(self.lost) + len(self.extra) + len(self.changed)


@dataclass(frozen=True)
class Verification:
    tables: list[TableDiff]
    events_read: int
    progress: dict[tuple[str, int], int]
    schema: str
    unreadable: dict[str, int] = field(default_factory=dict)  # "topic/partition" -> events the log lacks
    # for the first changed row of each table: column -> (live value, replayed value)
    changed_columns: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)

    @property
    def differences(self) -> int:
        return sum(t.differences for t in self.tables) + sum(self.unreadable.values())


def compare(table: str, live: Rows, replayed: Rows) -> TableDiff:
    """A pure comparison of one table's rows (id -> content hash)."""
    return TableDiff(table, len(live), len(replayed),
                     lost=sorted(set(replayed) - set(live)), extra=sorted(set(live) - set(replayed)),
                     changed=sorted(i for i in set(live) & set(replayed) if live[i] != replayed[i]))


async def read_rows(database_url: str, *, schema: str | None = None, consumer: str = LIVE_CONSUMER
                    ) -> tuple[dict[tuple[str, int], int], dict[str, Rows]]:
    """(progress of ``consumer``, every projected table's rows), from one consistent snapshot."""
    settings = {"search_path": schema} if schema else None
    connection = await asyncpg.connect(plain_url(database_url), server_settings=settings)
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            progress = {(r["topic"], r["partition"]): r["next_offset"] for r in await connection.fetch(
                "SELECT topic, partition, next_offset FROM projection_progress WHERE consumer = $1", consumer)}
            rows = {table: {r[0]: r[1] for r in await connection.fetch(
                f"SELECT id::text, md5(t::text) FROM {table} t")} for table in TABLES}
        return progress, rows
    finally:
        await connection.close()


@dataclass
class _Replayed:
    events: int = 0
    unreadable: dict[str, int] = field(default_factory=dict)


async def replay_until(settings: Settings, target: ReplayTarget, bounds: dict[tuple[str, int], int], *,
                       patience: int = 20) -> _Replayed:
    """Project every event before ``bounds`` (topic, partition -> next offset) into ``target``.

    A partition whose log ends before its bound (a broker that lost its log) is given up after
    ``patience`` empty fetches in a row and counted in ``unreadable``."""
    assert settings.kafka_bootstrap_servers and settings.database_url
    await copy_identities(settings.database_url, target)
    wanted = {TopicPartition(t, p): end for (t, p), end in bounds.items() if end > 0}
    result = _Replayed()
    if not wanted:
        return result
    writer = await ProjectionWriter.connect(plain_url(target.database_url), consumer="verify", schema=target.schema)
    producer = make_producer(settings.kafka_bootstrap_servers)
    consumer = make_consumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                             fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms)
    await producer.start()
    await consumer.start()

    async def written(outcome: BatchOutcome) -> None:
        result.events += outcome.received

    try:
        consumer.assign(list(wanted))
        await consumer.seek_to_beginning(*wanted)
        pipeline = WritePipeline(Projector(writer=writer, producer=producer, prefix=settings.topic_prefix),
                                 written=written)
        remaining, empty = dict(wanted), 0
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            records = {tp: [m for m in messages if m.offset < remaining[tp]] for tp, messages in batches.items()}
            records = {tp: messages for tp, messages in records.items() if messages}
            empty = 0 if records else empty + 1
            if records:
                await pipeline.put(records)
            for tp in list(remaining):
                position = await consumer.position(tp)
                if position >= remaining[tp] or empty >= patience:
                    if position < remaining[tp]:
                        result.unreadable[f"{tp.topic}/{tp.partition}"] = remaining[tp] - position
                    consumer.pause(tp)
                    del remaining[tp]
        await pipeline.drain()
        return result
    finally:
        await consumer.stop()
        await producer.stop()
        await writer.close()


async def verify(settings: Settings, *, schema: str | None = None, keep: bool = False,
                 consumer: str = LIVE_CONSUMER, timeout: float = 600.0) -> Verification:
    """Compare the live projections with a replay of the same events (see the module docstring)."""
    assert settings.database_url
    schema = schema or "verify_" + datetime.now(UTC).strftime("%Y%m%d_%H%M%S_%f")
    progress, live = await read_rows(settings.database_url, consumer=consumer)
    target = await prepare_target(settings.database_url, schema=schema, replace=True)
    try:
        replay = await asyncio.wait_for(replay_until(settings, target, progress), timeout)
        _, replayed = await read_rows(settings.database_url, schema=schema, consumer="verify")
        diffs = [compare(t, live[t], replayed[t]) for t in TABLES]
        columns = {d.table: await _column_diff(settings.database_url, schema, d.table, d.changed[0])
                   for d in diffs if d.changed}
    finally:
        if not keep:
            await _drop_schema(settings.database_url, schema)
    return Verification(diffs, replay.events, progress, schema, replay.unreadable, columns)


async def _column_diff(database_url: str, schema: str, table: str, row_id: str) -> dict[str, tuple[str, str]]:
    """The columns where one live row and its replayed twin differ (the live row may have moved on since
    the snapshot; the ids in the report are the ones to look at either way)."""
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        query = "SELECT row_to_json(t)::text FROM {} t WHERE id::text = $1"
        live = await connection.fetchval(query.format(f"public.{table}"), row_id)
        replayed = await connection.fetchval(query.format(f'"{schema}".{table}'), row_id)
    finally:
        await connection.close()
    a, b = json.loads(live or "{}"), json.loads(replayed or "{}")
    return {k: (str(a.get(k)), str(b.get(k))) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


async def _drop_schema(database_url: str, schema: str) -> None:
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def report_lines(result: Verification, *, show: int = 5) -> list[str]:
    """The table an operator reads: one line per table, then the first ids of each kind of difference."""
    lines = [f"{'table':<22}{'live':>9}{'replay':>9}{'lost':>7}{'extra':>7}{'changed':>9}"]
    for t in result.tables:
        lines.append(f"{t.table:<22}{t.live:>9}{t.replayed:>9}{len(t.lost):>7}{len(t.extra):>7}{len(t.changed):>9}")
    for t in result.tables:
        for kind, ids in (("lost", t.lost), ("extra", t.extra), ("changed", t.changed)):
            if ids:
                more = f" (+{len(ids) - show} more)" if len(ids) > show else ""
                lines.append(f"  {t.table} {kind}: {', '.join(ids[:show])}{more}")
    for table, columns in result.changed_columns.items():
        for column, (live, replayed) in columns.items():
            lines.append(f"  {table} first changed row, {column}: live {live} / replay {replayed}")
    for partition, missing in sorted(result.unreadable.items()):
        lines.append(f"  {partition}: the log ends {missing} events before the live progress")
    return lines

