"""The event archive: every event kept once, append-only, by month; topics restored from it into a new
broker (in order, offsets and all); projections replayed from it equal to those replayed from the log."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from aiokafka import TopicPartition

from infra.dburl import plain_url
from infra.embedded import EmbeddedBroker
from infra.kafka import ensure_topics, make_consumer
from projections import archive
from projections.history import restore_empty_topics
from projections.replay import prepare_target, replay, replay_archive, table_checksums
from schemas.topics import RECONCILIATION
from tests.support.events import (
    EPOCH,
    PROJECTED_TOPICS,
    add_users,
    lock_and_unlock,
    mixed_events,
    publish_projected,
)
from tests.support.servers import REPO_ROOT, unique_name
from tests.support.waiting import eventually

USERS = ["u-ann", "u-ben"]
COUNT = 600


@pytest.fixture(scope="module")
def events(settings):
    asyncio.run(add_users(settings.database_url, *USERS))
    log = mixed_events(USERS, COUNT - 2, seed=5) + lock_and_unlock(USERS[0], at=EPOCH + timedelta(milliseconds=COUNT))
    # Two months: the archive is partitioned by month.
    log = [e.model_copy(update={"occurred_at": e.occurred_at - timedelta(days=40)}) if i % 3 == 0 else e
           for i, e in enumerate(log)]

    asyncio.run(publish_projected(settings, log))
    return log


@contextlib.asynccontextmanager
async def running_archiver(settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(archive.serve(settings, stop=stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(plain_url(url))
    try:
        return await connection.fetch(sql, *args)
    finally:
        await connection.close()


async def _archived_count(settings) -> int:
    rows = await _fetch(settings.database_url, "SELECT count(*) AS n FROM event_archive WHERE topic LIKE $1",
                        f"{settings.topic_prefix}.%")
    return rows[0]["n"]


@pytest.fixture(scope="module")
def archived(settings, events):
    async def go() -> None:
        async with running_archiver(settings):
            await eventually(lambda: _archived_count(settings), until=lambda n: n == COUNT, timeout=60,
                             what="every event in the archive")

    asyncio.run(go())


async def test_every_event_is_archived_once_by_month_and_append_only(settings, archived):
    topics = [t.name(settings.topic_prefix) for t in PROJECTED_TOPICS]
    everything = {}
    for topic in topics:
        everything |= {TopicPartition(topic, p): [] for p in range(4)}
        contents = await _records(settings.kafka_bootstrap_servers, topic, 4)
        for partition, records in contents.items():
            everything[TopicPartition(topic, partition)] = records
    writer = await archive.ArchiveWriter.connect(settings.database_url, consumer=unique_name("again"))
    try:  # every event delivered again: refused by the primary key
        inserted, _ = await archive.archive_batch(writer, {tp: rs for tp, rs in everything.items() if rs})
    finally:
        await writer.close()
    assert inserted == 0
    assert await _archived_count(settings) == COUNT
    months = await _fetch(settings.database_url,
                          "SELECT DISTINCT tableoid::regclass::text AS month FROM event_archive")
    assert len(months) >= 2 and all(m["month"].startswith("event_archive_y") for m in months)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await _fetch(settings.database_url, "UPDATE event_archive SET account_id = 'x'")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await _fetch(settings.database_url, "DELETE FROM event_archive")


async def test_replay_from_the_archive_equals_replay_from_the_log(settings, archived):
    from_log = await prepare_target(settings.database_url, schema=unique_name("from_log"))
    from_archive = await prepare_target(settings.database_url, schema=unique_name("from_archive"))
    assert (await replay(settings, from_log)).events_read == COUNT
    result = await replay_archive(settings, from_archive)
    assert (result.events_read, result.dead_lettered) == (COUNT, 0)
    expected = await table_checksums(from_log.database_url, schema=from_log.schema)
    assert "empty" not in expected.values()
    assert await table_checksums(from_archive.database_url, schema=from_archive.schema) == expected
    since = EPOCH + timedelta(milliseconds=300)
    later = await prepare_target(settings.database_url, schema=unique_name("since"))
    assert (await replay_archive(settings, later, since=since)).events_read == sum(
        1 for e in (await _events_after(settings, since)))


async def _events_after(settings, since) -> list[asyncpg.Record]:
    return await _fetch(settings.database_url, "SELECT 1 FROM event_archive WHERE topic = ANY($1::text[]) "
                        "AND occurred_at >= $2", [t.name(settings.topic_prefix) for t in PROJECTED_TOPICS], since)


async def _partition_contents(bootstrap: str, topic: str, partitions: int) -> dict[int, list[bytes]]:
    return {p: [r.value for r in rs] for p, rs in (await _records(bootstrap, topic, partitions)).items()}


async def _records(bootstrap: str, topic: str, partitions: int) -> dict[int, list]:
    consumer = make_consumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        contents: dict[int, list] = {p: [] for p in range(partitions)}
        idle = 0
        while idle < 3:
            records = await consumer.getmany(timeout_ms=300)
            idle = 0 if records else idle + 1
            for tp, messages in records.items():
                contents[tp.partition] += messages
        return contents
    finally:
        await consumer.stop()


async def test_a_new_empty_broker_gets_every_topic_back_in_order_and_progress_is_clamped(settings, archived):
    topic = RECONCILIATION.name(settings.topic_prefix)
    before = await _partition_contents(settings.kafka_bootstrap_servers, topic, 4)
    await _fetch(settings.database_url, "INSERT INTO projection_progress (consumer, topic, partition, next_offset) "
                 "VALUES ('projector', $1, 0, 100000)", topic)
    data_dir = REPO_ROOT / ".reconguard" / unique_name("broker")
    broker = EmbeddedBroker(data_dir)
    broker.start()  # a new broker: what the embedded one is after a restart (memory storage)
    try:
        fresh = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers})
        await ensure_topics(broker.bootstrap_servers, settings.topic_prefix, partitions=4)
        restored = await restore_empty_topics(fresh)
        assert restored[topic] == sum(len(v) for v in before.values())
        assert await _partition_contents(broker.bootstrap_servers, topic, 4) == before
        stored = await _fetch(settings.database_url, "SELECT next_offset FROM projection_progress "
                              "WHERE consumer = 'projector' AND topic = $1 AND partition = 0", topic)
        assert stored[0]["next_offset"] == len(before[0]), "progress past the restored end would skip new events"
        assert await restore_empty_topics(fresh) == {}, "topics that hold events are not restored again"
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_a_batch_that_repeats_events_archives_each_once_from_its_first_offset(settings):
    """Repeats within a batch and of archived events are skipped; the rest go in, in offset order."""
    topic, first, second, third = unique_name("repeats"), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def row(event_id: uuid.UUID, offset: int) -> archive.ArchiveRow:
        return archive.ArchiveRow(EPOCH, event_id, topic, 0, offset, "Repeated", "u-ann", b"u-ann", b"{}")

    writer = await archive.ArchiveWriter.connect(settings.database_url, consumer=unique_name("repeats"))
    try:
        assert await writer.write([row(first, 2), row(second, 1), row(first, 0)], {}) == 2
        assert await writer.write([row(second, 3), row(third, 4)], {}) == 1
        assert await writer.write([row(second, 5)], {}) == 0
    finally:
        await writer.close()
    archived = await _fetch(settings.database_url, 'SELECT event_id, "offset" FROM event_archive WHERE topic = $1 '
                            "ORDER BY seq", topic)
    assert [(r["event_id"], r["offset"]) for r in archived] == [(first, 0), (second, 1), (third, 4)]
