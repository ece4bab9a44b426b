"""Partitioned storage on the real Postgres: snapshots land in daily partitions, retention drops
whole old partitions of both tables and nothing younger, and the migration keeps existing rows."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from infra.db import downgrade, migrate
from infra.dburl import plain_url
from infra.partitions import ARCHIVE, SNAPSHOTS, partitions_of
from projections.retention import prune
from projections.rows import POSITION_SNAPSHOTS
from projections.writer import PendingRow, ProjectionWriter
from tests.support.events import add_users
from tests.support.servers import create_database, drop_database, unique_name

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
USER = "u-keep"


@pytest.fixture
def database(servers):
    name = unique_name("ret")
    url = asyncio.run(create_database(servers.database_url, name))
    migrate(url)
    asyncio.run(add_users(url, USER))
    yield url
    asyncio.run(drop_database(servers.database_url, name))


def _snapshot(at: datetime) -> PendingRow:
    row = (uuid.uuid4(), USER, 100, 100, 100, 0, 0, 0, 0, 0, at, None, at)
    return PendingRow(POSITION_SNAPSHOTS, row, USER, None)


async def _write_days(url: str, days: list[datetime]) -> int:
    writer = await ProjectionWriter.connect(plain_url(url), consumer="retention-test")
    try:
        rows = [_snapshot(d) for d in days]
        first = await writer.write(rows, {}, on_rejected=_refuse)
        again = await writer.write(rows, {}, on_rejected=_refuse)  # a redelivery: refused by (id, created_at)
        assert again == 0
        return first
    finally:
        await writer.close()


async def _refuse(rejected) -> None:
    raise AssertionError(f"rows refused: {rejected}")


async def _archive_month(connection: asyncpg.Connection, at: datetime) -> None:
    await connection.execute(ARCHIVE.create_sql(at))
    await connection.execute(
        "INSERT INTO event_archive (occurred_at, event_id, topic, partition, \"offset\", event_type, account_id, "
        "value) VALUES ($1, $2, 't', 0, 0, 'X', $3, '{}')", at, uuid.uuid4(), USER)


def test_retention_drops_whole_old_partitions_and_keeps_the_window(database, settings):
    days = [NOW - timedelta(days=n) for n in (0, 1, 2, 3, 10)]
    assert asyncio.run(_write_days(database, days)) == 5

    async def scenario():
        connection = await asyncpg.connect(plain_url(database))
        try:
            for months_ago in (0, 2):
                await _archive_month(connection, NOW - timedelta(days=31 * months_ago))
            own = settings.model_copy(update={"snapshot_retention_days": 2, "archive_retention_days": 31})
            dropped = await prune(connection, own, now=NOW)
            left = await connection.fetchval("SELECT count(*) FROM position_snapshots")
            return (dropped, left, sorted(await partitions_of(connection, SNAPSHOTS)),
                    sorted(await partitions_of(connection, ARCHIVE)))
        finally:
            await connection.close()

    dropped, left, snapshot_days, archive_months = asyncio.run(scenario())
    assert dropped == ["position_snapshots_d20261122", "position_snapshots_d20261129", "event_archive_y2026m10"]
    assert left == 3  # today, yesterday and the day before (the window starts inside it)
    assert snapshot_days == ["position_snapshots_d20261130", "position_snapshots_d20261201",
                             "position_snapshots_d20261202"]
    assert archive_months == ["event_archive_y2026m12"]


def test_the_migration_keeps_existing_snapshots_both_ways(database):
    days = [NOW - timedelta(days=n) for n in (0, 1)]
    asyncio.run(_write_days(database, days))
    downgrade(database, "0006")

    async def count() -> int:
        connection = await asyncpg.connect(plain_url(database))
        try:
            return await connection.fetchval("SELECT count(*) FROM position_snapshots")
        finally:
            await connection.close()

    assert asyncio.run(count()) == 2
    migrate(database)
    assert asyncio.run(count()) == 2
