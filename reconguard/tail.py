"""`reconguard tail`: follow one topic and print each event readably."""

from __future__ import annotations

import asyncio
import json

from rich.console import Console

from infra.kafka import make_consumer
from infra.settings import Settings
from schemas import DecodeError, Topic, decode
from schemas.topics import ALL_TOPICS


def find_topic(name: str, prefix: str) -> Topic:
    for topic in ALL_TOPICS:
        if name in {topic.base, topic.name(prefix), f"{topic.base}.v{topic.version}"}:
            return topic
    known = ", ".join(t.base for t in ALL_TOPICS)
    raise KeyError(f"unknown topic {name!r}; known: {known}")


def describe(topic: Topic, value: bytes | None) -> str:
    try:
        envelope = decode(topic, value)
    except DecodeError as error:
        return f"[red]undecodable[/red] ({error.reason})"
    payload = envelope.payload.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    fields = " ".join(f"{k}={json.dumps(v)}" for k, v in payload.items() if k not in {"details", "positions"})
    extra = f" positions={len(envelope.payload.positions)}" if hasattr(envelope.payload, "positions") else ""
    time = envelope.occurred_at.strftime("%H:%M:%S.%f")[:-3]
    return f"[dim]{time}[/dim] [bold]{envelope.event_type}[/bold] [cyan]{envelope.account_id}[/cyan] {fields}{extra}"


async def follow(settings: Settings, name: str, *, from_beginning: bool, raw: bool, console: Console) -> None:
    topic = find_topic(name, settings.topic_prefix)
    consumer = make_consumer(topic.name(settings.topic_prefix), bootstrap_servers=settings.kafka_bootstrap_servers,
                             group_id=None, auto_offset_reset="earliest" if from_beginning else "latest")
    await consumer.start()
    try:
        while True:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for message in messages:
                    if raw:
                        console.print_json(message.value.decode("utf-8", errors="replace"))
                    else:
                        console.print(describe(topic, message.value), highlight=False)
    except asyncio.CancelledError:
        pass
    finally:
        await consumer.stop()
