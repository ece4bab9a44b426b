"""Topics are created with their retention and cleanup policy, as the broker reports them back."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from infra.kafka import ensure_topics
from schemas.topics import ALL_TOPICS, TICKS
from tests.support.servers import unique_name


async def _described(bootstrap_servers: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    finally:
        await admin.close()
    described: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            described[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}
    return described


async def test_each_topic_is_created_with_its_retention_and_cleanup_policy(settings):
    prefix = unique_name("cfg").replace("_", "-")
    names = await ensure_topics(settings.kafka_bootstrap_servers, prefix, partitions=1)
    described = await _described(settings.kafka_bootstrap_servers, names)
    for topic in ALL_TOPICS:
        configs = described[topic.name(prefix)]
        assert configs.get("retention.ms") == str(topic.retention_ms), topic.base
        assert configs.get("cleanup.policy") == "delete", topic.base
    assert described[TICKS.name(prefix)]["retention.ms"] == str(24 * 3600 * 1000)
