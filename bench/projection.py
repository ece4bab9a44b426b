"""Projection rate into Postgres beside raw asyncpg COPY of the same rows, measured in one run.

200k events (60% snapshots, 30% reconciliation rows, 10% alerts) are published to fresh topics;
the projector's code path (fetch, decode, COPY-stage, INSERT … ON CONFLICT, progress, commit)
projects them into one database, and the same rows are COPYed straight into another.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

import asyncpg

from infra.db import migrate
from infra.dburl import plain_url
from infra.embedded import infrastructure
from infra.kafka import ensure_topics, make_producer, publish_many
from infra.settings import Settings
from projections.replay import prepare_target, replay
from projections.rows import PROJECTED_TOPICS, TABLE_OF_TOPIC, row_for
from schemas.topics import TOPIC_OF_EVENT
from tests.support.events import add_users, mixed_events

EVENTS = 200_000
USERS = [f"u-bench-{i}" for i in range(50)]


async def _publish(settings: Settings, events) -> float:
    producer = make_producer(settings.kafka_bootstrap_servers, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    started = time.perf_counter()
    for topic in PROJECTED_TOPICS:
        chosen = [e for e in events if TOPIC_OF_EVENT[e.event_type] is topic]
        for i in range(0, len(chosen), 10_000):
            await publish_many(producer, topic, settings.topic_prefix, chosen[i:i + 10_000])
    elapsed = time.perf_counter() - started
    await producer.stop()
    return elapsed


async def _measure(settings: Settings) -> dict[str, float]:
    await asyncio.to_thread(migrate, settings.database_url)
    await ensure_topics(settings.kafka_bootstrap_servers, settings.topic_prefix, partitions=4)
    await add_users(settings.database_url, *USERS)
    events = mixed_events(USERS, EVENTS, seed=2026)
    publish_seconds = await _publish(settings, events)

    copy_target = await prepare_target(settings.database_url, schema="bench_copy", replace=True)
    from projections.replay import copy_identities

    await copy_identities(settings.database_url, copy_target)
    settings_copy = settings.model_copy(update={"database_url": copy_target.database_url})
    copy_seconds = await _copy_baseline_in_schema(settings_copy, copy_target.schema, events)
    # The projector reads the log, not this list: 200k envelopes kept alive here would only make
    # the garbage collector's walks over the projector's objects longer.
    del events
    gc.collect()

    projected = await prepare_target(settings.database_url, schema="bench_projection", replace=True)
    started = time.perf_counter()
    result = await replay(settings, projected)
    projection_seconds = time.perf_counter() - started
    assert result.rows_inserted == EVENTS, result
    return {"events": EVENTS, "publish_per_s": EVENTS / publish_seconds, "copy_per_s": EVENTS / copy_seconds,
            "projection_per_s": EVENTS / projection_seconds}


async def _copy_baseline_in_schema(settings: Settings, schema: str | None, events) -> float:
    by_table = []
    for topic, table in TABLE_OF_TOPIC.items():
        by_table.append((table, [row_for(table, e) for e in events if topic.payload_for(e.event_type)]))
    connection = await asyncpg.connect(plain_url(settings.database_url), server_settings={"search_path": schema})
    started = time.perf_counter()
    async with connection.transaction():
        for table, rows in by_table:
            await connection.copy_records_to_table(table.name, records=rows, columns=list(table.columns))
    elapsed = time.perf_counter() - started
    await connection.close()
    return elapsed


def main() -> dict[str, float]:
    data_dir = Path(".reconguard") / "bench"
    with infrastructure(kafka_bootstrap_servers=None, database_url=None, data_dir=data_dir, fresh=True) as ep:
        settings = Settings(KAFKA_BOOTSTRAP_SERVERS=ep.kafka_bootstrap_servers, DATABASE_URL=ep.database_url,
                            topic_prefix="bench")
        numbers = asyncio.run(_measure(settings))
    numbers["ratio_to_copy"] = numbers["projection_per_s"] / numbers["copy_per_s"]
    return numbers


if __name__ == "__main__":
    print(main())
