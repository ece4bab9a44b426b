"""The JSON Schemas in docs/ are what downstream consumers read: they must match the code."""

from __future__ import annotations

import json

from schemas.jsonschema import SCHEMA_DIR, rendered, stale
from schemas.topics import ALL_TOPICS


def test_committed_schemas_are_not_stale():
    assert stale() == [], "docs/schemas is stale: run `make docs` (reconguard docs) and commit the result"


def test_every_topic_and_payload_has_a_schema():
    index = json.loads((SCHEMA_DIR / "index.json").read_text())
    listed = {(t["topic"], e["event_type"]) for t in index["topics"] for e in t["events"]}
    declared = {(f"<prefix>.{t.base}.v{t.version}", p.event_type) for t in ALL_TOPICS for p in t.payloads}
    assert listed == declared


def test_a_changed_schema_is_detected(tmp_path):
    for name, text in rendered().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert stale(tmp_path) == []
    (tmp_path / "ticks.v1" / "TickReport.json").write_text("{}")
    (tmp_path / "retired.v1").mkdir()
    (tmp_path / "retired.v1" / "Gone.json").write_text("{}")
    assert stale(tmp_path) == ["retired.v1/Gone.json", "ticks.v1/TickReport.json"]
