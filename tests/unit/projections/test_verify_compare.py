"""verify's comparison: every kind of difference is counted, and identical tables count nothing."""

from __future__ import annotations

import pytest

from projections.verify import Verification, compare, report_lines


@pytest.mark.parametrize(("description", "live", "replayed", "lost", "extra", "changed"), [
    ("identical tables", {"a": "1", "b": "2"}, {"a": "1", "b": "2"}, [], [], []),
    ("a row the live table lost", {"a": "1"}, {"a": "1", "b": "2"}, ["b"], [], []),
    ("a live row the log never made", {"a": "1", "x": "9"}, {"a": "1"}, [], ["x"], []),
    ("a row whose content changed", {"a": "1"}, {"a": "other"}, [], [], ["a"]),
    ("both empty", {}, {}, [], [], []),
])
def test_compare(description, live, replayed, lost, extra, changed):
    diff = compare("t", live, replayed)
    assert (diff.lost, diff.extra, diff.changed) == (lost, extra, changed), description
    assert diff.differences == len(lost) + len(extra) + len(changed)


def test_the_report_prints_every_count_and_names_the_rows():
    result = Verification([compare("drawdown_alerts", {"a": "1", "x": "9"}, {"a": "1", "b": "2"})], 2, {}, "s",
                          unreadable={"alerts/0": 3})
    lines = report_lines(result)
    assert lines[1].split() == ["drawdown_alerts", "2", "2", "1", "1", "0"]
    assert "  drawdown_alerts lost: b" in lines and "  drawdown_alerts extra: x" in lines
    assert any("alerts/0" in line and "3 events" in line for line in lines)
    assert result.differences == 5
