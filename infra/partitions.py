"""Tables partitioned by time: naming, creation and retention of their partitions.

Two tables grow with time and are partitioned by range of a timestamp: ``event_archive`` by month
of ``occurred_at`` and ``position_snapshots`` by day of ``created_at``. Partitions are created as
time arrives (by whoever writes the rows) and retention drops whole partitions older than the
setting: a ``DROP`` of a partition is instant and returns its space at once, where a ``DELETE``
would leave dead rows for vacuum (and the archive refuses row deletes by design).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimePartitioning:
    """How one table is cut: by ``column``, into ``prefix`` + period stamp, by ``"month"`` or ``"day"``."""

    table: str
    column: str
    prefix: str
    period: str  # "month" or "day"

    def bounds(self, at: datetime) -> tuple[str, datetime, datetime]:
        """The partition holding ``at``: its name and bounds [start, end) (pure)."""
        at = at.astimezone(UTC)
        if self.period == "month":
            start = datetime(at.year, at.month, 1, tzinfo=UTC)
            end = datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=UTC)
            return f"{self.prefix}{at.year:04d}m{at.month:02d}", start, end
        start = datetime(at.year, at.month, at.day, tzinfo=UTC)
        return f"{self.prefix}{at.year:04d}{at.month:02d}{at.day:02d}", start, start + timedelta(days=1)

    def create_sql(self, at: datetime) -> str:
        name, start, end = self.bounds(at)
        return (f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {self.table} "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")

    def end_of(self, name: str) -> datetime | None:
        """The upper bound of a partition from its name; None for a name not of this table (pure)."""
        if not name.startswith(self.prefix):
            return None
        stamp = name[len(self.prefix):]
        try:
            if self.period == "month":
                year, month = stamp.split("m")
                return self.bounds(datetime(int(year), int(month), 1, tzinfo=UTC))[2]
            return self.bounds(datetime.strptime(stamp, "%Y%m%d").replace(tzinfo=UTC))[2]
        except ValueError:
            return None

    def expired(self, names: Iterable[str], *, now: datetime, keep: timedelta) -> list[str]:
        """The partitions wholly older than ``now - keep`` (pure); a partition that still holds
        one row inside the window is kept."""
        horizon = now - keep
        return sorted(n for n in names if (end := self.end_of(n)) is not None and end <= horizon)


ARCHIVE = TimePartitioning("event_archive", "occurred_at", "event_archive_y", "month")
SNAPSHOTS = TimePartitioning("position_snapshots", "created_at", "position_snapshots_d", "day")
PARTITIONED = (ARCHIVE, SNAPSHOTS)


def is_partition_name(name: str) -> bool:
    """Whether ``name`` is a run-time partition (Alembic's autogenerate leaves them alone)."""
    return any(p.end_of(name) is not None for p in PARTITIONED)


class PartitionMaker:
    """Creates the partitions a batch of rows needs, once per partition per connection."""

    def __init__(self, partitioning: TimePartitioning) -> None:
        self.partitioning = partitioning
        self._made: set[str] = set()

    async def ensure(self, connection: Any, times: Iterable[datetime]) -> None:
        import asyncpg  # only where rows are written

        for name, at in {self.partitioning.bounds(t)[0]: t for t in times}.items():
            if name in self._made:
                continue
            try:
                await connection.execute(self.partitioning.create_sql(at))
            except asyncpg.DuplicateTableError:
                pass  # another writer made it at the same moment
            self._made.add(name)


async def partitions_of(connection: Any, partitioning: TimePartitioning) -> list[str]:
    rows = await connection.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1 "
        "AND p.relnamespace = to_regnamespace(current_schema())::oid", partitioning.table)
    return [r["relname"] for r in rows]


async def drop_expired(connection: Any, partitioning: TimePartitioning, *, now: datetime,
                       keep: timedelta) -> list[str]:
    """Detach and drop every partition older than ``keep``; returns their names."""
    dropped = []
    for name in partitioning.expired(await partitions_of(connection, partitioning), now=now, keep=keep):
        async with connection.transaction():
            await connection.execute(f"ALTER TABLE {partitioning.table} DETACH PARTITION {name}")
            await connection.execute(f"DROP TABLE {name}")
        log.info("retention: dropped %s (older than %s)", name, keep)
        dropped.append(name)
    return dropped
