"""The embedded broker killed with SIGKILL under `run`'s supervision: it is started again and its topics
come back from the event archive (its log lived in memory)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import asyncpg
import pytest

from infra.dburl import plain_url
from infra.kafka import make_producer, publish_many
from infra.service import SUPERVISION
from infra.settings import Settings
from reconguard import runner
from reconguard.runner import ServiceSpec, embedded_or_given, prepare, run_services
from schemas import utcnow
from schemas.topics import ALERTS
from tests.support.events import alert
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def data_dir(server_data_dir: Path) -> Path:
    return server_data_dir


async def _archived(url: str) -> int:
    connection = await asyncpg.connect(plain_url(url), timeout=5)
    try:
        return await connection.fetchval("SELECT count(*) FROM event_archive")
    finally:
        await connection.close()


async def _on_topic(settings: Settings) -> int:
    from tests.integration.projections.test_archive import _partition_contents

    contents = await _partition_contents(settings.kafka_bootstrap_servers, ALERTS.name(settings.topic_prefix),
                                         settings.topic_partitions)
    return sum(len(v) for v in contents.values())


def test_a_killed_embedded_broker_comes_back_with_its_topics_restored(data_dir):
    settings = Settings(data_dir=data_dir, KAFKA_BOOTSTRAP_SERVERS=None, DATABASE_URL=None)
    events = [alert("u-x", at=utcnow()) for _ in range(25)]

    async def scenario(resolved: Settings) -> None:
        await prepare(resolved)
        stop = asyncio.Event()
        restarts = SUPERVISION.status("broker").restarts
        running = asyncio.create_task(run_services(resolved, [ServiceSpec("archiver", "projections.archive:serve")],
                                                   stop=stop, supervise=True))
        try:
            producer = make_producer(resolved.kafka_bootstrap_servers)
            await producer.start()
            try:
                await publish_many(producer, ALERTS, resolved.topic_prefix, events)
            finally:
                await producer.stop()
            await eventually(lambda: _archived(resolved.database_url), until=lambda n: n == len(events), timeout=60,
                             what="the events in the archive")
            broker = runner._running_endpoints.broker
            old = broker.pid
            os.kill(old, signal.SIGKILL)
            await eventually(lambda: asyncio.sleep(0, SUPERVISION.status("broker").restarts),
                             until=lambda n: n == restarts + 1, timeout=90, what="the broker to be started again")
            assert broker.pid != old and broker.running()
            assert await _on_topic(resolved) == len(events), "the alerts topic is restored from the archive"
            assert await _archived(resolved.database_url) == len(events), "nothing archived twice"
        finally:
            stop.set()
            await asyncio.wait_for(running, 60)

    with embedded_or_given(settings) as resolved:
        asyncio.run(scenario(resolved))
