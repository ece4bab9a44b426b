"""A short `make load`: the whole pipeline as separate processes at 200 accounts for 60 s.

Bounds are loose on purpose (the machine is shared): this catches a pipeline that breaks at load
(a service crashing, a group falling behind for good, snapshots not written, closes never sent),
not a few per cent of speed; `make load` measures that.
"""

from __future__ import annotations

import math

import pytest

from bench.load import run_point

ACCOUNTS = 200
pytestmark = pytest.mark.timeout(600)  # one run of the whole pipeline: start, 20 s warm-up, 60 s, stop


@pytest.fixture(scope="module")
def point(tmp_path_factory):
    return run_point(ACCOUNTS, seconds=60.0, warmup=20.0, directory=tmp_path_factory.mktemp("load"))


def test_no_service_crashed(point):
    assert point.numbers["services_crashed"] == []


def test_every_account_is_reported_about_once_a_second(point):
    rate = point.numbers["events_per_s"]["account-reports"]
    assert rate > 0.5 * ACCOUNTS, f"account-reports at {rate:.1f}/s for {ACCOUNTS} accounts"


def test_no_consumer_group_falls_behind(point):
    late = {group: lag for group, lag in point.numbers["lag_max_s"].items() if lag > 20.0}
    assert late == {}, f"groups more than 20 s behind at some sample: {late}"


def test_snapshots_and_the_archive_keep_up_with_the_reports(point):
    rows = point.numbers["table_rows_per_hour"]
    assert rows.get("position_snapshots", 0) > 0
    reports_per_hour = point.numbers["events_per_s"]["account-reports"] * 3600
    assert rows.get("event_archive", 0) > reports_per_hour  # every event of every topic, reports included


def test_guard_closes_react_in_time(point):
    reaction = point.numbers["reaction_p99_ms"]
    if math.isnan(reaction):
        pytest.skip(f"no guard close in this run (closes seen: {point.numbers['closes']})")
    assert reaction < 5000.0, f"guard reaction p99 {reaction:.0f} ms past the notice"


def test_the_reaction_is_split_into_its_parts_and_no_close_comes_before_its_deadline(point):
    parts = point.numbers["reaction_parts_p50_ms"]
    if math.isnan(parts.get("late", math.nan)):
        pytest.skip(f"no guard close in this run (closes seen: {point.numbers['closes']})")
    assert set(parts) == {"judged", "warned", "late"}
    assert parts["late"] >= 0.0, "fire_due never fires before the deadline"
