"""Time partitions: names and bounds, and which ones retention drops (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from infra.partitions import ARCHIVE, SNAPSHOTS, is_partition_name
from infra.settings import Settings
from projections.retention import kept

AT = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(("partitioning", "at", "expected"), [
    pytest.param(ARCHIVE, AT, ("event_archive_y2026m12", datetime(2026, 12, 1, tzinfo=UTC),
                               datetime(2027, 1, 1, tzinfo=UTC)), id="archive: December ends at the new year"),
    pytest.param(SNAPSHOTS, AT, ("position_snapshots_d20261231", datetime(2026, 12, 31, tzinfo=UTC),
                                 datetime(2027, 1, 1, tzinfo=UTC)), id="snapshots: the last day of the year"),
    pytest.param(SNAPSHOTS, datetime(2027, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=3))),
                 ("position_snapshots_d20261231", datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
                 id="snapshots: a time in another zone falls in its UTC day"),
])
def test_bounds(partitioning, at, expected):
    assert partitioning.bounds(at) == expected


@pytest.mark.parametrize("partitioning", [ARCHIVE, SNAPSHOTS], ids=["archive", "snapshots"])
def test_the_end_read_back_from_a_name_is_the_end_it_was_made_with(partitioning):
    name, _, end = partitioning.bounds(AT)
    assert partitioning.end_of(name) == end


def test_expired_keeps_a_partition_that_still_holds_a_row_inside_the_window():
    names = ["position_snapshots_d20261129", "position_snapshots_d20261130", "position_snapshots_d20261201",
             "position_snapshots_d20261202", "event_archive_y2026m11", "position_snapshots_old"]
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    # Two days kept: the window starts 2026-11-30 12:00, inside the partition of the 30th.
    assert SNAPSHOTS.expired(names, now=now, keep=timedelta(days=2)) == ["position_snapshots_d20261129"]


def test_archive_months_expire_only_once_wholly_past():
    names = ["event_archive_y2026m10", "event_archive_y2026m11", "event_archive_y2026m12"]
    now = datetime(2026, 12, 2, tzinfo=UTC)
    assert ARCHIVE.expired(names, now=now, keep=timedelta(days=1)) == ["event_archive_y2026m10",
                                                                      "event_archive_y2026m11"]
    assert ARCHIVE.expired(names, now=now, keep=timedelta(days=2)) == ["event_archive_y2026m10"]


@pytest.mark.parametrize(("name", "expected"), [
    ("event_archive_y2026m12", True), ("position_snapshots_d20261202", True),
    ("position_snapshots", False), ("event_archive", False), ("position_snapshots_dnot", False),
])
def test_only_run_time_partitions_are_hidden_from_alembic(name, expected):
    assert is_partition_name(name) is expected


def test_retention_zero_keeps_a_table_for_ever():
    settings = Settings(snapshot_retention_days=7, archive_retention_days=0)
    assert kept(settings) == [(SNAPSHOTS, timedelta(days=7))]
