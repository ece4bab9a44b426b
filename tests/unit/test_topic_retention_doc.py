"""docs/performance.md states each topic's retention and cleanup policy as schemas/topics.py declares them."""

from __future__ import annotations

from pathlib import Path

from schemas.topics import ALL_TOPICS

DOC = Path(__file__).parents[2] / "docs" / "performance.md"


def _documented() -> dict[str, tuple[str, str]]:
    text = DOC.read_text()
    table = text.split("<!-- topic-retention:start -->")[1].split("<!-- topic-retention:end -->")[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.strip().splitlines()[2:]]
    return {row[0].strip("`"): (row[2], row[3]) for row in rows}


def test_every_topic_is_documented_with_its_retention_and_cleanup_policy():
    declared = {f"{t.base}.v{t.version}": (f"{t.retention_ms / 86_400_000:g} d", t.cleanup_policy) for t in ALL_TOPICS}
    assert _documented() == declared
