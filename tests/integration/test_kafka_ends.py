"""Where a partition ends, as the real broker tells it: the worker's table recovery reads to there.

tansu's ListOffsets answer can be short by whole batches; a recovery that stopped there would
restore a table without its last updates. ``fetched_end_offsets`` reads the end from a fetch.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.kafka import fetched_end_offsets
from infra.settings import Settings

pytestmark = pytest.mark.integration


async def test_the_end_is_after_the_last_record_of_every_batch(settings: Settings, producer) -> None:
    topic = f"{settings.topic_prefix}.ends"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    sent = {0: 0, 1: 7, 2: 120}
    for partition, count in sent.items():
        for start in range(0, count, 10):  # several batches, each acknowledged before the next
            futures = [await producer.send(topic, b"x", partition=partition) for _ in range(start, min(count, start + 10))]
            await asyncio.gather(*futures)
    ends = await fetched_end_offsets(settings.kafka_bootstrap_servers, [TopicPartition(topic, p) for p in sent])
    assert ends == {TopicPartition(topic, p): count for p, count in sent.items()}
