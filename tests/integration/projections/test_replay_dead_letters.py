"""Replay reads the log into a fresh schema and writes nothing back: a message it cannot use is
counted and logged, never sent to the live dead-letter topic (whose readers would take it for a
new failure of the live pipeline)."""

from __future__ import annotations

from aiokafka import TopicPartition

from infra.kafka import ensure_topics, fetched_end_offsets, make_producer
from projections.replay import prepare_target, replay
from schemas.topics import ALL_TOPICS, DEAD_LETTERS, RECONCILIATION


async def test_replay_counts_an_unusable_message_and_writes_no_dead_letter(settings):
    await ensure_topics(settings.kafka_bootstrap_servers, settings.topic_prefix,
                        partitions=settings.topic_partitions, topics=ALL_TOPICS)
    dead = DEAD_LETTERS.name(settings.topic_prefix)
    partitions = [TopicPartition(dead, p) for p in range(settings.topic_partitions)]
    before = await fetched_end_offsets(settings.kafka_bootstrap_servers, partitions)
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(RECONCILIATION.name(settings.topic_prefix), b'{"event_type": "PositionMatched"',
                                     key=b"u-nobody")
    finally:
        await producer.stop()
    target = await prepare_target(settings.database_url, schema="replay_dead_letters")
    result = await replay(settings, target)
    assert result.dead_lettered == 1
    assert await fetched_end_offsets(settings.kafka_bootstrap_servers, partitions) == before
