"""The retention job: drops the time partitions older than the settings, hourly.

``position_snapshots`` keeps ``snapshot_retention_days`` (whole days), ``event_archive``
``archive_retention_days`` (whole months); 0 keeps a table for ever. It runs inside the projector
(and can be run once with ``prune``); two projectors running it at once are harmless, as a
partition another one dropped is simply not found again.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import asyncpg

from infra.dburl import plain_url
from infra.partitions import ARCHIVE, SNAPSHOTS, TimePartitioning, drop_expired
from infra.settings import Settings
from schemas.envelope import utcnow

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 3600.0


def kept(settings: Settings) -> list[tuple[TimePartitioning, timedelta]]:
    """Each partitioned table with a retention, and how long it keeps (pure)."""
    days = ((SNAPSHOTS, settings.snapshot_retention_days), (ARCHIVE, settings.archive_retention_days))
    return [(table, timedelta(days=n)) for table, n in days if n > 0]


async def prune(connection: asyncpg.Connection, settings: Settings, *, now: datetime) -> list[str]:
    """Drop every partition past its table's retention; returns the names dropped."""
    dropped: list[str] = []
    for table, keep in kept(settings):
        try:
            dropped += await drop_expired(connection, table, now=now, keep=keep)
        except (asyncpg.UndefinedTableError, asyncpg.InvalidObjectDefinitionError) as error:
            log.info("retention of %s: skipped this round (%s)", table.table, error)  # a concurrent drop
    return dropped


async def serve(settings: Settings, *, stop: asyncio.Event, interval: float = INTERVAL_SECONDS) -> None:
    """Prune now and every ``interval`` seconds until ``stop``; a database fault waits a round."""
    assert settings.database_url, "resolve endpoints before serving"
    while not stop.is_set():
        if kept(settings):
            try:
                connection = await asyncpg.connect(plain_url(settings.database_url), timeout=10)
                try:
                    await prune(connection, settings, now=utcnow())
                finally:
                    await connection.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                log.warning("retention: database unavailable (%r); again in %.0f s", error, interval)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass
