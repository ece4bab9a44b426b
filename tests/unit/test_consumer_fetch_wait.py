"""Which fetch wait each kind of consumer asks tansu for (a fetch costs tansu CPU per partition it names)."""

from __future__ import annotations

from infra.kafka import group_consumer
from infra.settings import Settings


def _settings(**fields: object) -> Settings:
    return Settings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", **fields)


async def test_a_service_consumer_waits_the_latency_sensitive_default():
    consumer = group_consumer(_settings(consumer_fetch_max_wait_ms=40), name="executor")
    assert consumer._fetch_max_wait_ms == 40  # built, never started


async def test_projection_consumers_wait_their_own_longer_setting():
    settings = _settings(consumer_fetch_max_wait_ms=40)
    consumer = group_consumer(settings, name="archive", fetch_max_wait_ms=settings.projection_fetch_max_wait_ms)
    assert consumer._fetch_max_wait_ms == settings.projection_fetch_max_wait_ms == 500
