"""The AsyncAPI 3 document of every topic, generated from the declarations in `schemas/`: the
event-driven counterpart of the API's ``/openapi.json`` (written to docs/schemas/asyncapi.json).

One channel per topic (its address has the configurable prefix as a parameter), one message per
event type with its Kafka key and its payload schema, and one operation per topic saying whether
reconguard sends on it or receives from it (the platform's expected trades). The payload schemas
are the published JSON Schemas, their shared definitions moved into ``components.schemas``.
"""

from __future__ import annotations

from typing import Any

from schemas.jsonschema import CONVENTIONS, event_schema
from schemas.topics import ALL_TOPICS, Topic

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING = "0.5.0"


def document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    shared: dict[str, Any] = {}
    for topic in ALL_TOPICS:
        name = f"{topic.base}.v{topic.version}"
        channels[name] = _channel(topic)
        for payload in topic.payloads:
            schema = event_schema(topic, payload)
            for definition, value in schema.pop("$defs", {}).items():
                _share(shared, definition, _local(value))
            messages[payload.event_type] = _message(topic, payload.event_type, _local(schema))
        action = "receive" if topic.written_by == "platform" else "send"
        operations[f"{action}-{name}"] = {
            "action": action, "channel": {"$ref": f"#/channels/{name}"},
            "summary": f"{'The platform writes' if action == 'receive' else topic.written_by.capitalize() + ' writes'}"
                       f" {topic.base}: {topic.description}",
            "messages": [{"$ref": f"#/channels/{name}/messages/{p.event_type}"} for p in topic.payloads]}
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": "reconguard topics", "version": "1",
                 "description": " ".join(CONVENTIONS.values())},
        "defaultContentType": "application/json",
        "servers": {"kafka": {"host": "kafka:9092", "protocol": "kafka",
                              "description": "Any Kafka-protocol cluster (KAFKA_BOOTSTRAP_SERVERS)."}},
        "channels": channels, "operations": operations,
        "components": {"messages": messages, "schemas": shared},
    }


def _channel(topic: Topic) -> dict[str, Any]:
    return {
        "address": f"{{prefix}}.{topic.base}.v{topic.version}",
        "description": f"{topic.description} Written by {topic.written_by}; key: {topic.key}.",
        "parameters": {"prefix": {"description": "RECONGUARD_TOPIC_PREFIX", "default": "reconguard"}},
        "messages": {p.event_type: {"$ref": f"#/components/messages/{p.event_type}"} for p in topic.payloads},
    }


def _message(topic: Topic, event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": event_type, "title": payload.get("title", event_type),
        "summary": payload.get("description", ""), "contentType": "application/json",
        "payload": payload,
        "bindings": {"kafka": {"key": {"type": "string", "description": f"The envelope's {topic.key}, UTF-8"},
                               "bindingVersion": KAFKA_BINDING}},
    }


def _local(value: Any) -> Any:
    """``value`` with references into ``$defs`` pointed at ``components.schemas`` and no
    ``$schema``/``$id`` (an AsyncAPI payload is a Schema Object inside the document)."""
    if isinstance(value, dict):
        out = {k: _local(v) for k, v in value.items() if k not in ("$schema", "$id")}
        if isinstance(out.get("$ref"), str) and out["$ref"].startswith("#/$defs/"):
            out["$ref"] = "#/components/schemas/" + out["$ref"].removeprefix("#/$defs/")
        return out
    if isinstance(value, list):
        return [_local(v) for v in value]
    return value


def _share(shared: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    if name in shared and shared[name] != schema:
        raise ValueError(f"two different schemas are both called {name}: rename one of the models")
    shared[name] = schema
