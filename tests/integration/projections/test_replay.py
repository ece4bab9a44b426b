"""Replay rebuilds the projections from the log: twice gives identical tables, equal to the live ones."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from infra.kafka import make_producer, publish_many
from projections.replay import ReplayError, prepare_target, replay, table_checksums
from schemas.topics import ACCOUNT_STATE, ALERTS, RECONCILIATION
from tests.integration.projections.test_projector import running_projector
from tests.support.events import EPOCH, add_users, mixed_events
from tests.support.servers import unique_name
from tests.support.waiting import eventually

USERS = ["u-dan", "u-eve"]


@pytest.fixture(scope="module")
def events(settings):
    asyncio.run(add_users(settings.database_url, *USERS))
    log = mixed_events(USERS, 1500, seed=11)

    async def publish() -> None:
        topic_of = {"AccountAssessed": ACCOUNT_STATE, "GuardAlertRaised": ALERTS}
        producer = make_producer(settings.kafka_bootstrap_servers)
        await producer.start()
        for topic in (ACCOUNT_STATE, ALERTS, RECONCILIATION):
            await publish_many(producer, topic, settings.topic_prefix,
                               [e for e in log if topic_of.get(e.event_type, RECONCILIATION) is topic])
        await producer.stop()

    asyncio.run(publish())
    return log


async def _replayed(settings, **target) -> dict[str, str]:
    prepared = await prepare_target(settings.database_url, **target)
    seen: list[tuple[int, int | None]] = []
    result = await replay(settings, prepared, progress=lambda done, total: seen.append((done, total)))
    assert result.events_read == 1500 and result.dead_lettered == 0
    assert seen[-1] == (1500, 1500), "the progress bar ends full"
    return await table_checksums(prepared.database_url, schema=prepared.schema)


async def test_replaying_twice_gives_identical_tables_equal_to_the_live_projection(settings, events):
    first = await _replayed(settings, schema=unique_name("replay"))
    second = await _replayed(settings, database=unique_name("replay"))
    assert first == second
    assert "empty" not in first.values()
    async with running_projector(settings, "live"):
        await eventually(lambda: table_checksums(settings.database_url), until=lambda c: c == first, timeout=60,
                         what="the live projection to equal the replay")


async def test_replay_from_a_timestamp_projects_only_later_events(settings, events):
    prepared = await prepare_target(settings.database_url, schema=unique_name("since"))
    since = EPOCH + timedelta(milliseconds=1000)
    result = await replay(settings, prepared, since=since)
    assert result.events_read == 1500
    assert result.rows_inserted == sum(1 for e in events if e.occurred_at >= since) == 500


async def test_replay_refuses_to_overwrite_an_existing_target(settings, events):
    name = unique_name("taken")
    await prepare_target(settings.database_url, schema=name)
    with pytest.raises(ReplayError, match="exists"):
        await prepare_target(settings.database_url, schema=name)
    with pytest.raises(ReplayError, match="public"):
        await prepare_target(settings.database_url, schema="public")
