"""Kafka clients with the settings every service needs on tansu and on Apache Kafka alike.

- producers are never idempotent or transactional (tansu rejects InitProducerId); delivery is
  at-least-once and every consumer dedupes;
- consumers commit by hand, after the effect, with short session timeouts (tansu's first join
  waits half of it) and short fetch waits (tansu holds fetches for part of the wait) where
  latency matters. A fetch costs tansu about 0.1 ms of CPU per partition it names, data or not
  (one consumer of 56 idle partitions with a 50 ms wait: 0.13 of a core), so consumers that are
  not latency-sensitive wait longer;
- the end of a partition is read from fetch responses (``highwater``), because tansu's
  ListOffsets answer can be short by whole batches.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Collection, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from infra.settings import Settings
from schemas import Envelope, Topic, encode, encode_key
from schemas.deadletters import MessageDeadLettered
from schemas.envelope import DERIVED_ID_NAMESPACE, observed, utcnow
from schemas.topics import ALL_TOPICS, DEAD_LETTERS

log = logging.getLogger(__name__)

_DEAD_LETTER_VALUE_LIMIT = 64 * 1024


def make_producer(bootstrap_servers: str, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = dict(
        bootstrap_servers=bootstrap_servers, enable_idempotence=False, acks="all", linger_ms=5,
        request_timeout_ms=30000,
    )
    return AIOKafkaProducer(**(options | overrides))


def make_consumer(
    *topics: str, bootstrap_servers: str, group_id: str | None, session_timeout_ms: int = 6000,
    fetch_max_wait_ms: int = 50, **overrides: Any,
) -> AIOKafkaConsumer:
    options: dict[str, Any] = dict(
        bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(500, session_timeout_ms // 6), fetch_max_wait_ms=fetch_max_wait_ms,
        max_poll_interval_ms=300000, rebalance_timeout_ms=session_timeout_ms * 2,
    )
    return AIOKafkaConsumer(*topics, **(options | overrides))


def group_consumer(settings: Settings, *topics: Topic, name: str, group_id: str | None = None,
                   fetch_max_wait_ms: int | None = None) -> AIOKafkaConsumer:
    """A service's consumer: group ``{prefix}.{name}`` unless ``group_id`` is given, the settings'
    session timeout and fetch wait (unless ``fetch_max_wait_ms`` is given), manual commits."""
    assert settings.kafka_bootstrap_servers, "resolve endpoints before consuming"
    return make_consumer(
        *(topic.name(settings.topic_prefix) for topic in topics), bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id or f"{settings.topic_prefix}.{name}", session_timeout_ms=settings.consumer_session_timeout_ms,
        fetch_max_wait_ms=fetch_max_wait_ms or settings.consumer_fetch_max_wait_ms)


async def ensure_topics(
    bootstrap_servers: str, prefix: str, *, partitions: int, topics: Iterable[Topic] = ALL_TOPICS,
    attempts: int = 20,
) -> list[str]:
    """Create the topics that do not exist yet, each with its retention and cleanup policy
    (``Topic.configs``); return every name. Retries while the broker starts. An existing topic
    keeps its configuration: change that with the broker's tools."""
    configs = {topic.name(prefix): topic.configs() for topic in topics}
    names = list(configs)
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [NewTopic(n, partitions, 1, topic_configs=configs[n]) for n in names if n not in existing]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass  # created by another service meanwhile
            return names
        except Exception as error:  # noqa: BLE001 - any failure at start-up is retried, then raised
            if attempt == attempts - 1:
                raise
            log.info("broker not ready for topic creation (%s); retrying", error)
            await asyncio.sleep(0.25)
        finally:
            await admin.close()
    return names


async def publish(producer: AIOKafkaProducer, topic: Topic, prefix: str, envelope: Envelope[Any]) -> None:
    """Send one envelope keyed by its account and wait for the broker's acknowledgement."""
    await producer.send_and_wait(topic.name(prefix), encode(envelope), key=encode_key(envelope.account_id))


async def publish_many(producer: AIOKafkaProducer, topic: Topic, prefix: str,
                       envelopes: Iterable[Envelope[Any]]) -> int:
    """Send a batch and wait until the broker has acknowledged all of it."""
    name = topic.name(prefix)
    futures = [await producer.send(name, encode(e), key=encode_key(e.account_id)) for e in envelopes]
    if futures:
        await asyncio.gather(*futures)
    return len(futures)


def dead_letter(
    *, consumer: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
    reason: str,
) -> Envelope[MessageDeadLettered]:
    """The dead-letter envelope for a message nobody could use (id derived from where it was)."""
    text = (value or b"")[:_DEAD_LETTER_VALUE_LIMIT].decode("utf-8", errors="replace")
    key_text = key.decode("utf-8", errors="replace") if key else None
    payload = MessageDeadLettered(consumer=consumer, source_topic=topic, source_partition=partition,
                                  source_offset=offset, key=key_text, value=text, reason=reason[:4000])
    event_id = uuid.uuid5(DERIVED_ID_NAMESPACE, f"dead-letter/{consumer}/{topic}/{partition}/{offset}")
    return observed(payload, account_id=(key_text or "unknown")[:64] or "unknown", occurred_at=utcnow(),
                    event_id=event_id)


async def send_dead_letter(producer: AIOKafkaProducer, prefix: str, envelope: Envelope[Any]) -> None:
    await publish(producer, DEAD_LETTERS, prefix, envelope)


async def fetched_end_offsets(bootstrap_servers: str, partitions: Collection[TopicPartition], *,
                              timeout: float = 10.0) -> dict[TopicPartition, int]:
    """Each partition's end as a fetch response reports it (its high watermark).

    ``end_offsets`` (ListOffsets) can be short by whole batches on tansu; a fetch from its answer
    returns the records it missed and the true high watermark. Partitions no fetch answered
    within ``timeout`` keep the ListOffsets answer (and a warning says so)."""
    wanted = list(partitions)
    if not wanted:
        return {}
    consumer = make_consumer(bootstrap_servers=bootstrap_servers, group_id=None, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        consumer.assign(wanted)
        listed = await consumer.end_offsets(wanted)
        for tp, offset in listed.items():
            consumer.seek(tp, offset)
        deadline = asyncio.get_running_loop().time() + timeout
        while any(consumer.highwater(tp) is None for tp in wanted):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("no fetch answered for %s in %.0fs: using ListOffsets' end",
                            [tp for tp in wanted if consumer.highwater(tp) is None], timeout)
                break
            await consumer.getmany(timeout_ms=50)
        return {tp: max(listed[tp], consumer.highwater(tp) or 0) for tp in wanted}
    finally:
        await consumer.stop()


async def caught_up(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> bool:
    """Whether every partition has been read to its high watermark (as fetch responses report it)."""
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True
