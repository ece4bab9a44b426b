"""JSON Schema of every topic's messages, for downstream consumers (written into docs/schemas/).

Each schema is JSON Schema draft 2020-12 with an ``$id``, says exactly what the strict decoder
(`schemas.codec`) accepts, and lists the rules across fields that JSON Schema cannot express
(``x-rules``; the decoder enforces them). ``index.json`` says how the topics are keyed and encoded,
how a reader picks a schema, how a new version ships, and which topics are internal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.deadletters import DEAD_LETTER_CONSUMERS
from schemas.envelope import ENVELOPE_RULES, Envelope, Payload
from schemas.topics import ALL_TOPICS, Topic

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "docs" / "schemas"
#: Published beside the topics' schemas, written by the floor that declares it (``simulation/scenario.py``).
WRITTEN_ELSEWHERE = frozenset({"scenario.v1.schema.json"})
DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "urn:reconguard:schema:"

CONVENTIONS = {
    "key": "The Kafka key is the envelope's account_id (the account owner's user id) as UTF-8 bytes: one "
           "account's messages stay in order on one partition.",
    "value": "The Kafka value is one envelope as UTF-8 JSON (an object); no other encoding is used.",
    "headers": "Kafka headers are not used: everything a reader needs is in the envelope.",
    "schema_selection": "A topic may carry several event types: read event_type (and schema_version) from the "
                        "envelope and validate against that event's schema listed below.",
    "strictness": "Readers in reconguard decode strictly: numbers must be JSON numbers (never text), integers "
                  "integer literals (1, never 1.0 or \"1\"), booleans JSON booleans (never 0/1), no unknown "
                  "field; times are RFC 3339 with an offset, ids UUID text; the x-rules of each schema hold too.",
    "versioning": "A compatible change (a new optional field, a new event type) ships in the same topic version "
                  "with a new schema_version of that event, and readers upcast older versions. An incompatible "
                  "change ships as a new topic (<base>.v<N+1>) written beside the old one until every reader "
                  "has moved.",
}
INTERNAL_TOPICS = [
    {"topic": "<prefix>-streams-<table>-changelog",
     "description": "Faust table changelogs of the streams worker (tables such as reconciliation, drawdown, "
                    "market): its private state, not a contract; do not read them."},
    {"topic": "<prefix>-streams-__assignor-__leader",
     "description": "Faust's partition assignor topic: internal to the worker group."},
]


def schema_id(topic: Topic, payload: type[Payload]) -> str:
    return f"{ID_BASE}{topic.base}.v{topic.version}:{payload.event_type}:v{payload.schema_version}"


def event_schema(topic: Topic, payload: type[Payload]) -> dict[str, Any]:
    """The JSON Schema of ``payload``'s envelope on ``topic``."""
    schema = Envelope[payload].model_json_schema()  # type: ignore[valid-type]
    rules = {**ENVELOPE_RULES, **payload.rules} if "user_id" in payload.model_fields else dict(payload.rules)
    schema = {"$schema": DIALECT, "$id": schema_id(topic, payload), **schema}
    schema["title"] = f"{payload.event_type} on {topic.base}.v{topic.version}"
    schema["description"] = " ".join((payload.__doc__ or payload.event_type).split())
    schema["properties"]["event_type"]["const"] = payload.event_type
    schema["properties"]["schema_version"]["const"] = payload.schema_version
    if rules:
        schema["x-rules"] = rules
    return schema


def rendered() -> dict[str, str]:
    """File name (relative to docs/schemas) -> JSON text, for every topic and event type."""
    files: dict[str, str] = {}
    index: list[dict[str, Any]] = []
    for topic in ALL_TOPICS:
        folder = f"{topic.base}.v{topic.version}"
        events = []
        for payload in topic.payloads:
            files[f"{folder}/{payload.event_type}.json"] = _dump(event_schema(topic, payload))
            events.append({"event_type": payload.event_type, "schema_version": payload.schema_version,
                           "schema": f"{folder}/{payload.event_type}.json", "$id": schema_id(topic, payload)})
        index.append({"topic": f"<prefix>.{topic.base}.v{topic.version}", "key": topic.key,
                      "written_by": topic.written_by,
                      "description": topic.description, "events": events})
    from schemas.asyncapi import document  # it builds on event_schema above

    files["asyncapi.json"] = _dump(document())
    files["index.json"] = _dump({
        "conventions": CONVENTIONS, "topics": index, "internal_topics": INTERNAL_TOPICS,
        "dead_letter_consumers": list(DEAD_LETTER_CONSUMERS),
        "asyncapi": "asyncapi.json"})
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
