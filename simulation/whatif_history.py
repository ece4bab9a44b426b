"""Recorded history for ``whatif``: the worker's input topics and the close commands it really issued.

Read from the broker (``log``: every partition from its start to its end, with no consumer group, so
nothing is committed) or from the event archive in PostgreSQL (``archive``: read-only, via
``projections/history.py``). Events are decoded with the topics' own schemas; one that does not
decode is counted and left out, as the worker would dead-letter it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition

from infra.internals import refresh_metadata
from infra.kafka import make_consumer
from infra.settings import Settings
from projections.history import archived
from schemas import DecodeError, Envelope, decode
from schemas.topics import (
    ACCOUNT_REPORTS,
    CLOSE_COMMANDS,
    CLOSE_RESULTS,
    EXPECTED_TRADES,
    LOCK_COMMANDS,
    POSITION_REPORTS,
    TICKS,
    Topic,
)

log = logging.getLogger(__name__)

#: What the worker reads from outside itself (its own close commands it makes again in the replay).
REPLAYED = (ACCOUNT_REPORTS, POSITION_REPORTS, TICKS, EXPECTED_TRADES, CLOSE_RESULTS, LOCK_COMMANDS)
#: What really happened: the close commands the worker issued.
DECIDED = (CLOSE_COMMANDS,)
SOURCES = ("log", "archive")


@dataclass
class History:
    inputs: list[Envelope[Any]] = field(default_factory=list)  # in time order
    decided: list[Envelope[Any]] = field(default_factory=list)
    undecodable: int = 0


@dataclass(frozen=True)
class Window:
    since: datetime | None = None
    until: datetime | None = None
    accounts: frozenset[str] = frozenset()

    def holds(self, event: Envelope[Any]) -> bool:
        return (self.since is None or event.occurred_at >= self.since) and \
            (self.until is None or event.occurred_at < self.until) and \
            (not self.accounts or event.account_id in self.accounts)


async def read_history(settings: Settings, window: Window, *, source: str = "log") -> History:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    topics = {t.name(settings.topic_prefix): t for t in (*REPLAYED, *DECIDED)}
    raw = await (_from_archive(settings, topics, window) if source == "archive" else _from_log(settings, topics))
    history = History()
    for topic, value in raw:
        try:
            event = decode(topic, value)
        except DecodeError:
            history.undecodable += 1
            continue
        if window.holds(event):
            (history.decided if topic in DECIDED else history.inputs).append(event)
    history.inputs.sort(key=lambda e: (e.occurred_at, e.recorded_at))
    history.decided.sort(key=lambda e: e.occurred_at)
    return history


async def _from_archive(settings: Settings, topics: dict[str, Topic], window: Window) -> list[tuple[Topic, bytes]]:
    if not settings.database_url:
        raise ValueError("--source archive needs DATABASE_URL")
    found: list[tuple[Topic, bytes]] = []
    async for batch in archived(settings.database_url, list(topics), since=window.since):
        found += [(topics[r.topic], r.value) for r in batch]
    return found


async def _from_log(settings: Settings, topics: dict[str, Topic], *, timeout: float = 60.0
                    ) -> list[tuple[Topic, bytes]]:
    """Every record of ``topics``, from each partition's start to its end (and what arrives as it is read)."""
    if not settings.kafka_bootstrap_servers:
        raise ValueError("--source log needs KAFKA_BOOTSTRAP_SERVERS")
    consumer = make_consumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(name, p) for name in topics for p in sorted(await _partitions(consumer, name))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        behind = {tp for tp in partitions if ends[tp] > 0}
        found: list[tuple[Topic, bytes]] = []
        async with asyncio.timeout(timeout):
            while behind:
                for tp, records in (await consumer.getmany(*behind, timeout_ms=200)).items():
                    found += [(topics[tp.topic], r.value) for r in records]
                behind = {tp for tp in behind if await consumer.position(tp) < ends[tp]}
            # tansu can report a partition's end one record short: one more fetch takes what is past it
            for tp, records in (await consumer.getmany(*partitions, timeout_ms=500)).items():
                found += [(topics[tp.topic], r.value) for r in records]
        return found
    finally:
        await consumer.stop()


async def _partitions(consumer: Any, name: str) -> set[int]:
    known = consumer.partitions_for_topic(name)
    if not known:
        await refresh_metadata(consumer)
        known = consumer.partitions_for_topic(name)
    return known or set()


async def recorded_what_if(settings: Settings, window: Window, changes: Any, *, source: str = "log") -> Any:
    """Read the history and the levels in force (``users``, read-only), and replay it with ``changes``."""
    from simulation.whatif import what_if
    from streams.levels import read_levels

    history = await read_history(settings, window, source=source)
    levels = await read_levels(settings.database_url) if settings.database_url else {}
    if history.undecodable:
        log.warning("%d recorded events did not decode and were left out", history.undecodable)
    return what_if(history.inputs, history.decided, guard=settings.guard, recorded_levels=levels, changes=changes,
                   until=window.until)
