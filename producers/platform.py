"""How the signal platform tells reconguard what it approved: ``TradeApproved`` on EXPECTED_TRADES,
and how it learns which accounts are locked (ACCOUNT_LOCKS), so it approves no trade for them.

The envelope id is derived from the approval id, so publishing the same approval twice (a retry,
a replay) yields one expectation downstream. See docs/platform-integration.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer, TopicPartition

from infra.dburl import plain_url
from infra.kafka import caught_up, ensure_topics, make_consumer, make_producer, publish
from infra.settings import Settings
from schemas import DecodeError, Envelope, decode, observed, utcnow
from schemas.codec import decode_payload
from schemas.envelope import DERIVED_ID_NAMESPACE
from schemas.locks import AccountLocked, AccountUnlocked
from schemas.platform import TradeApproved, TradeClosedByPlatform
from schemas.topics import ACCOUNT_LOCKS, EXPECTED_TRADES

log = logging.getLogger(__name__)

Expectation = TradeApproved | TradeClosedByPlatform


def approval_event_id(trade: Expectation) -> uuid.UUID:
    """The same approval (or the same platform close of it), the same event id."""
    return uuid.uuid5(DERIVED_ID_NAMESPACE, f"{trade.event_type}/{trade.approval_id}/{trade.signal_id}")


def expected_trade(trade: Expectation) -> Envelope[Expectation]:
    return observed(trade, account_id=trade.user_id, occurred_at=utcnow(), event_id=approval_event_id(trade))


async def publish_expected(producer: AIOKafkaProducer, prefix: str,
                           trade: Expectation) -> Envelope[Expectation]:
    """Append one expectation with an already started producer (the demo's way)."""
    envelope = expected_trade(trade)
    await publish(producer, EXPECTED_TRADES, prefix, envelope)
    return envelope


async def publish_expected_trade(settings: Settings,
                                 trade: Expectation) -> Envelope[Expectation]:
    """Append one approved trade (or a platform close) and wait for the broker's acknowledgement."""
    if settings.kafka_bootstrap_servers is None:
        raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set: start `reconguard run` or point it at Kafka")
    await ensure_topics(settings.kafka_bootstrap_servers, settings.topic_prefix,
                        partitions=settings.topic_partitions, topics=(EXPECTED_TRADES,))
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        return await publish_expected(producer, settings.topic_prefix, trade)
    finally:
        await producer.stop()


def expectation_from_json(raw: str | bytes) -> Expectation:
    """A payload typed on the command line: a platform close if it has no entry price, else an approval.

    Decoded as strictly as every message on the topics (no text for numbers); raises DecodeError
    (a ValueError) naming every bad field.
    """
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise DecodeError(f"malformed JSON: {error}") from None
    if isinstance(data, dict) and "entry_price" not in data and "direction" not in data:
        return decode_payload(TradeClosedByPlatform, raw)
    return decode_payload(TradeApproved, raw)


class LockedAccounts:
    """The accounts reconguard has locked, as the platform learns them from ACCOUNT_LOCKS."""

    def __init__(self) -> None:
        self._locks: dict[str, uuid.UUID] = {}

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._locks

    def apply(self, envelope: Envelope[Any]) -> None:
        p = envelope.payload
        if isinstance(p, AccountLocked):
            self._locks[p.user_id] = envelope.event_id
        elif isinstance(p, AccountUnlocked) and self._locks.get(p.user_id) == p.lock_id:
            del self._locks[p.user_id]


async def follow_locks(settings: Settings, locked: LockedAccounts, *, stop: asyncio.Event) -> None:
    """Keep ``locked`` up to date from the start of ACCOUNT_LOCKS until ``stop``."""
    assert settings.kafka_bootstrap_servers is not None
    consumer = make_consumer(ACCOUNT_LOCKS.name(settings.topic_prefix),
                             bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    try:
                        locked.apply(decode(ACCOUNT_LOCKS, record.value))
                    except DecodeError as error:
                        log.warning("platform: unusable account-locks message: %s", error.reason)
    finally:
        await consumer.stop()


class UnknownReference(ValueError):
    """An expectation naming a user or an approval reconguard does not know."""


async def check_references(settings: Settings, trade: Expectation) -> None:
    """Refuse (UnknownReference) a trade for a user not in ``users``, or a platform close of an
    approval never published on the expected-trades topic."""
    assert settings.database_url and settings.kafka_bootstrap_servers
    connection = await asyncpg.connect(plain_url(settings.database_url), timeout=10)
    try:
        known = await connection.fetchval("SELECT 1 FROM users WHERE id = $1", trade.user_id)
    finally:
        await connection.close()
    if not known:
        raise UnknownReference(f"no user {trade.user_id!r}: add it with `reconguard users add` first")
    if isinstance(trade, TradeClosedByPlatform) and not await approval_published(settings, trade):
        raise UnknownReference(f"no approval {trade.approval_id!r} of {trade.user_id} was ever published")


async def approval_published(settings: Settings, close: TradeClosedByPlatform) -> bool:
    """Whether the expected-trades topic holds the approval ``close`` closes (read to its end)."""
    assert settings.kafka_bootstrap_servers
    name = EXPECTED_TRADES.name(settings.topic_prefix)
    consumer = make_consumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                             fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms)
    await consumer.start()
    try:
        partitions = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
        if not partitions:
            return False
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while not await caught_up(consumer, partitions):
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                if any(_approves(record.value, close) for record in records):
                    return True
        return False
    finally:
        await consumer.stop()


def _approves(raw: bytes | None, close: TradeClosedByPlatform) -> bool:
    try:
        payload = decode(EXPECTED_TRADES, raw).payload
    except DecodeError:
        return False
    return isinstance(payload, TradeApproved) and (payload.approval_id, payload.user_id) == (
        close.approval_id, close.user_id)
