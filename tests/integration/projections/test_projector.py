"""The projector on the real broker and Postgres: idempotent, crash-safe, and bad input dead-lettered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from infra.dburl import plain_url
from infra.kafka import ensure_topics, make_consumer, make_producer, publish_many
from projections.projector import BatchOutcome, serve
from schemas import decode, encode_key, observed
from schemas.decisions import ActionTaken, AlertType, GuardAlertRaised
from schemas.topics import ACCOUNT_STATE, ALERTS, DEAD_LETTERS, RECONCILIATION
from tests.support.events import EPOCH, add_users, mixed_events
from tests.support.servers import unique_name
from tests.support.waiting import eventually

USERS = ["u-ann", "u-ben", "u-cat"]
TABLES = ("reconciliation_logs", "position_snapshots", "drawdown_alerts")


class Crash(Exception):
    """Stands for the process dying between the database commit and the offset commit."""


@pytest.fixture(scope="module", autouse=True)
def known_users(database_url):
    asyncio.run(add_users(database_url, *USERS))


@pytest.fixture
async def settings(settings, database_url):
    """Each test: its own topics and empty tables, so it sees only its own events."""
    connection = await asyncpg.connect(plain_url(database_url))
    await connection.execute(f"TRUNCATE {', '.join(TABLES)}, projection_progress")
    await connection.close()
    own = settings.model_copy(update={"topic_prefix": unique_name("p").replace("_", "-")})
    await ensure_topics(own.kafka_bootstrap_servers, own.topic_prefix, partitions=own.topic_partitions)
    return own


async def _publish(settings, events) -> None:
    topic_of = {"AccountAssessed": ACCOUNT_STATE, "GuardAlertRaised": ALERTS}
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for event in events:
            await publish_many(producer, topic_of.get(event.event_type, RECONCILIATION), settings.topic_prefix,
                               [event])
    finally:
        await producer.stop()


async def _publish_raw(settings, topic, values: list[bytes]) -> None:
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic.name(settings.topic_prefix), value, key=encode_key("u-ann"))
    finally:
        await producer.stop()


async def _counts(settings) -> dict[str, int]:
    connection = await asyncpg.connect(plain_url(settings.database_url))
    try:
        return {t: await connection.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
    finally:
        await connection.close()


def _expected(events) -> dict[str, int]:
    table = {"AccountAssessed": "position_snapshots", "GuardAlertRaised": "drawdown_alerts"}
    counts = dict.fromkeys(TABLES, 0)
    for event in {e.event_id: e for e in events}.values():
        counts[table.get(event.event_type, "reconciliation_logs")] += 1
    return counts


@contextlib.asynccontextmanager
async def running_projector(settings, consumer_name: str, **options: Any) -> AsyncIterator[asyncio.Task]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop, consumer_name=consumer_name, **options))
    try:
        yield task
    finally:
        stop.set()
        with contextlib.suppress(Crash):
            await asyncio.wait_for(task, 30)


async def test_every_event_delivered_twice_gives_the_same_rows(settings):
    events = mixed_events(USERS, 300, seed=1)
    await _publish(settings, events + events)
    async with running_projector(settings, "twice"):
        counts = await eventually(lambda: _counts(settings), until=lambda c: c == _expected(events), timeout=60,
                                  what="one row per distinct event")
    assert sum(counts.values()) == 300


async def test_a_crash_between_database_commit_and_offset_commit_loses_and_doubles_nothing(settings):
    events = mixed_events(USERS, 400, seed=2)
    await _publish(settings, events)
    crashed: list[BatchOutcome] = []

    async def crash_once(outcome: BatchOutcome) -> None:
        crashed.append(outcome)
        raise Crash()

    async with running_projector(settings, "crashy", after_db_commit=crash_once) as task:
        with pytest.raises(Crash):
            await asyncio.wait_for(asyncio.shield(task), 60)
    assert crashed and crashed[0].inserted > 0, "the crash came after rows were committed"
    # The group's Kafka offset was never committed: the restarted projector is handed the same
    # records again and must neither lose the rest nor write the first batch twice.
    async with running_projector(settings, "crashy"):
        await eventually(lambda: _counts(settings), until=lambda c: c == _expected(events), timeout=60,
                         what="every event exactly once after the restart")
    assert await _counts(settings) == _expected(events)


async def test_malformed_and_invalid_messages_are_dead_lettered_and_good_ones_still_land(settings):
    good = mixed_events(USERS, 50, seed=3)
    unknown_user = mixed_events(["u-nobody"], 1, seed=4)
    await _publish_raw(settings, RECONCILIATION, [b"{not json", b'{"event_type": "PositionMatched"}', b""])
    await _publish(settings, good + unknown_user)
    async with running_projector(settings, "dlq"):
        await eventually(lambda: _counts(settings), until=lambda c: c == _expected(good), timeout=60,
                         what="the good events")
    reasons = await _dead_letter_reasons(settings, expected=4)
    assert any(r.startswith("malformed JSON") for r in reasons)
    assert any(r.startswith("schema-invalid") for r in reasons)
    assert "empty message" in reasons
    assert "unknown user 'u-nobody'" in reasons


async def _dead_letter_reasons(settings, *, expected: int) -> list[str]:
    consumer = make_consumer(DEAD_LETTERS.name(settings.topic_prefix),
                             bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    await consumer.start()
    reasons: list[str] = []
    try:
        async def read() -> list[str]:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                reasons.extend(decode(DEAD_LETTERS, m.value).payload.reason for m in messages)
            return reasons

        await eventually(read, until=lambda r: len(r) >= expected, timeout=30, what="dead letters")
    finally:
        await consumer.stop()
    return reasons


async def test_a_crash_before_the_database_commit_loses_nothing(settings, monkeypatch):
    """The effect comes first: had the offset been committed before the rows, the restarted projector
    would start after the batch the crash swallowed, and those events would be lost."""
    from projections.writer import ProjectionWriter

    events = mixed_events(USERS, 400, seed=5)
    await _publish(settings, events)
    real_write = ProjectionWriter.write
    calls: list[int] = []

    async def dies_while_writing(self, pending, progress, *, on_rejected):
        calls.append(len(pending))
        raise Crash()

    monkeypatch.setattr(ProjectionWriter, "write", dies_while_writing)
    async with running_projector(settings, "early") as task:
        with pytest.raises(Crash):
            await asyncio.wait_for(asyncio.shield(task), 60)
    assert calls and calls[0] > 0 and sum((await _counts(settings)).values()) == 0
    monkeypatch.setattr(ProjectionWriter, "write", real_write)
    async with running_projector(settings, "early"):
        await eventually(lambda: _counts(settings), until=lambda c: c == _expected(events), timeout=60,
                         what="every event, the crashed batch included")


def _alert_states(user_id: str, start) -> list:
    """One alert through three states, each a little later and with other numbers, as the tracker
    publishes them (same ``alert_id``, rising ``revision``)."""
    first = observed(GuardAlertRaised(
        user_id=user_id, alert_type=AlertType.DRAWDOWN_CRITICAL, action_taken=ActionTaken.WARNING_SENT,
        status="open", message="warning", drawdown_percent=10.4, equity_gbp=8960.0, threshold_percent=10.0),
        account_id=user_id, occurred_at=start)
    later = [observed(GuardAlertRaised(
        user_id=user_id, alert_type=AlertType.DRAWDOWN_CRITICAL, action_taken=action, status=status,
        message=status, drawdown_percent=11.0 + n, equity_gbp=8800.0 - n, threshold_percent=10.0,
        positions_closed_count=n, alert_id=first.event_id, revision=n), account_id=user_id,
        occurred_at=start + timedelta(seconds=5 * n))
        for n, (status, action) in enumerate([("ordered", ActionTaken.WARNING_SENT),
                                              ("executed", ActionTaken.POSITIONS_CLOSED)], start=1)]
    return [first, *later]


async def test_an_alerts_states_in_one_batch_end_as_written_one_by_one(settings):
    """Live, the states of an alert arrive in separate batches; a replay reads them in one. Both must
    end with the first state's creation time and numbers, and the last state's outcome."""
    batched, apart = _alert_states("u-ann", EPOCH), _alert_states("u-ben", EPOCH)
    await _publish(settings, batched)
    async with running_projector(settings, "states"):
        for state in apart:  # one at a time: each in its own batch
            await _publish(settings, [state])
            await eventually(lambda: _counts(settings), until=lambda c: c["drawdown_alerts"] == 2, timeout=60,
                             what="both alerts projected")
        connection = await asyncpg.connect(plain_url(settings.database_url))
        try:
            async def rows():
                return await connection.fetch(
                    "SELECT user_id, created_at, drawdown_percent, equity_gbp, status, revision, "
                    "positions_closed_count FROM drawdown_alerts ORDER BY user_id")
            found = await eventually(rows, until=lambda rs: [r["revision"] for r in rs] == [2, 2], timeout=60,
                                     what="the last state of both alerts")
        finally:
            await connection.close()
    ann, ben = ({k: v for k, v in dict(r).items() if k != "user_id"} for r in found)
    assert ann == ben
    assert (ann["created_at"], float(ann["drawdown_percent"]), ann["status"], ann["positions_closed_count"]) == (
        EPOCH, 10.4, "executed", 2)
