"""docs/schemas/asyncapi.json is a valid AsyncAPI 3 document and says what `schemas/` declares.

The AsyncAPI specification's own JSON Schema is vendored as tests/unit/data/asyncapi-3.0.0.schema.json
(``schemas/3.0.0-without-$id.json`` of the npm package @asyncapi/specs 6.11.1, Apache-2.0).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from schemas.jsonschema import SCHEMA_DIR, event_schema
from schemas.topics import ALL_TOPICS

SPEC = json.loads((Path(__file__).resolve().parents[1] / "data" / "asyncapi-3.0.0.schema.json").read_text())
DOCUMENT = json.loads((SCHEMA_DIR / "asyncapi.json").read_text())
VALIDATOR = Draft7Validator(SPEC)


def test_the_document_is_valid_asyncapi_3():
    errors = [f"{list(e.path)}: {e.message[:200]}" for e in VALIDATOR.iter_errors(DOCUMENT)]
    assert DOCUMENT["asyncapi"] == "3.0.0" and errors == []


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda d: d.__setitem__("asyncapi", "3.0"), id="a wrong version"),
        pytest.param(lambda d: next(iter(d["operations"].values())).__setitem__("action", "publish"),
                     id="an AsyncAPI 2 action"),
        pytest.param(lambda d: next(iter(d["channels"].values())).__setitem__("address", 42), id="a numeric address"),
        pytest.param(lambda d: d["components"]["messages"]["TickReport"]["payload"].__setitem__("type", "tuple"),
                     id="a payload schema of an unknown type"),
    ],
)
def test_the_specification_schema_refuses_a_broken_document(breakage):
    broken = copy.deepcopy(DOCUMENT)
    breakage(broken)
    assert not VALIDATOR.is_valid(broken)


def _resolved(value, components):
    if isinstance(value, dict):
        if "$ref" in value and value["$ref"].startswith("#/components/schemas/"):
            return _resolved(components[value["$ref"].rsplit("/", 1)[-1]], components)
        return {k: _resolved(v, components) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, components) for v in value]
    return value


def _inlined(schema):
    defs = schema.get("$defs", {})

    def walk(value):
        if isinstance(value, dict):
            if "$ref" in value and value["$ref"].startswith("#/$defs/"):
                return walk(defs[value["$ref"].rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in value.items() if k not in ("$defs", "$schema", "$id")}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(schema)


@pytest.mark.parametrize(("topic", "payload"), [pytest.param(t, p, id=f"{t.base}/{p.event_type}")
                                                for t in ALL_TOPICS for p in t.payloads])
def test_each_event_is_a_message_on_its_topic_with_its_published_schema(topic, payload):
    channel = DOCUMENT["channels"][f"{topic.base}.v{topic.version}"]
    assert channel["address"] == f"{{prefix}}.{topic.base}.v{topic.version}"
    assert channel["messages"][payload.event_type] == {"$ref": f"#/components/messages/{payload.event_type}"}
    message = DOCUMENT["components"]["messages"][payload.event_type]
    assert message["bindings"]["kafka"]["key"]["type"] == "string"
    components = DOCUMENT["components"]["schemas"]
    assert _resolved(message["payload"], components) == _inlined(event_schema(topic, payload))


def test_nothing_else_is_described():
    declared = {f"{t.base}.v{t.version}" for t in ALL_TOPICS}
    assert set(DOCUMENT["channels"]) == declared
    assert set(DOCUMENT["components"]["messages"]) == {p.event_type for t in ALL_TOPICS for p in t.payloads}
    assert {op["channel"]["$ref"].rsplit("/", 1)[-1] for op in DOCUMENT["operations"].values()} == declared
