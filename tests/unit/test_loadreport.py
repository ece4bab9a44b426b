"""`make load` writes its figures into docs/performance.md between markers, and the plot beside it."""

from __future__ import annotations

from bench.load import Point
from bench.loadreport import END, PLOT, START, write


def _point(accounts: int, lag: float, reaction: float) -> Point:
    numbers = {"events_per_s": {"account-reports": accounts * 1.0, "ticks": 5.0}, "lag_p99_s": {"projector": lag},
               "lag_max_s": {"projector": lag * 2}, "reaction_p50_ms": reaction / 2, "reaction_p99_ms": reaction,
               "cpu_share": {"worker": 0.5, "poller": 0.25}, "rss_mib": {"worker": 100.0}, "closes": {},
               "table_bytes_per_hour": {"position_snapshots": 2**20 * accounts}, "broker_bytes_per_hour": 0.0}
    return Point(accounts, 60.0, (1.5, 1.0, 0.5), numbers)


def test_the_section_is_replaced_not_appended_and_says_which_counts_held(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Performance\n\nabove\n\n{START}\nold figures\n{END}\n\nbelow\n")
    points = [_point(200, 0.5, 120.0), _point(500, 3.0, 400.0)]
    write(points, command="python -m bench load --accounts 200 500", docs=tmp_path)
    write(points, command="python -m bench load --accounts 200 500", docs=tmp_path)
    text = doc.read_text()
    assert text.count(START) == 1 and "old figures" not in text
    assert text.startswith("# Performance\n\nabove") and text.rstrip().endswith("below")
    assert "| 200 | 1.50 | - | 200 | 205 | 0.50 / 1.00 (projector) | 60 / 120 | 0.75 | 0.25 / - | 100 | yes |" in text
    assert "| 500 | 1.50 | - | 500 | 505 | 3.00 / 6.00 (projector) | 200 / 400 | 0.75 | 0.25 / - | 100 | no |" in text
    assert "Largest N holding lag < 2 s and reaction p99 < 250 ms: 200." in text
    assert "this run's own processes included" in text  # the load average is measured, not claimed
    # 500 accounts + the demo's 4 grow position_snapshots 500 MiB an hour: 23.81 MiB per account per day.
    assert "| position_snapshots | 23.81 |" in text
    assert (tmp_path / PLOT).read_bytes().startswith(b"\x89PNG")


def test_a_count_polled_slower_than_once_a_second_says_how_slow(tmp_path):
    (tmp_path / "performance.md").write_text("# Performance\n")
    slow = _point(1000, 0.5, 120.0)
    slow.numbers["events_per_s"]["account-reports"] = 250.0
    slow.numbers["startup_s"] = 95.4
    write([slow], command="python -m bench load --accounts 1000", docs=tmp_path)
    text = (tmp_path / "performance.md").read_text()
    assert "| 1000 | 1.50 | 95 | 250 |" in text
    assert "no: each account polled 0.25 times a second, not 1 (rounds took 4 s)" in text
    assert "Largest N holding lag < 2 s and reaction p99 < 250 ms: none of the counts tried." in text
