"""JSON Schema of every topic's messages, for downstream consumers (written into docs/schemas/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.envelope import Envelope
from schemas.topics import ALL_TOPICS

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "docs" / "schemas"
#: Published beside the topics' schemas, written by the floor that declares it (``simulation/scenario.py``).
WRITTEN_ELSEWHERE = frozenset({"scenario.v1.schema.json"})


def rendered() -> dict[str, str]:
    """File name (relative to docs/schemas) -> JSON text, for every topic and event type."""
    files: dict[str, str] = {}
    index: list[dict[str, Any]] = []
    for topic in ALL_TOPICS:
        folder = f"{topic.base}.v{topic.version}"
        events = []
        for payload in topic.payloads:
            schema = Envelope[payload].model_json_schema()  # type: ignore[valid-type]
            schema["title"] = f"{payload.event_type} on {topic.base}.v{topic.version}"
            schema["properties"]["event_type"]["const"] = payload.event_type
            schema["properties"]["schema_version"]["const"] = payload.schema_version
            files[f"{folder}/{payload.event_type}.json"] = _dump(schema)
            events.append({"event_type": payload.event_type, "schema_version": payload.schema_version,
                           "schema": f"{folder}/{payload.event_type}.json"})
        index.append({"topic": f"<prefix>.{topic.base}.v{topic.version}", "key": topic.key,
                      "written_by": topic.written_by,
                      "description": topic.description, "events": events})
    files["index.json"] = _dump({"topics": index})
    return files


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    written = []
    for name, text in rendered().items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Files that differ from what the code declares (missing, changed, or no longer declared)."""
    wanted = rendered()
    differing = [n for n, text in wanted.items() if not (directory / n).exists() or (directory / n).read_text() != text]
    present = {str(p.relative_to(directory)) for p in directory.rglob("*.json")} if directory.exists() else set()
    return sorted(differing + [n for n in present if n not in wanted and n not in WRITTEN_ELSEWHERE])
