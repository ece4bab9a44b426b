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

from aiokafka import AIOKafkaProducer

from infra.kafka import ensure_topics, make_consumer, make_producer, publish
from infra.settings import Settings
from schemas import DecodeError, Envelope, decode, observed, utcnow
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

    Raises pydantic.ValidationError naming every bad field.
    """
    data = json.loads(raw)
    if isinstance(data, dict) and "entry_price" not in data and "direction" not in data:
        return TradeClosedByPlatform.model_validate(data)
    return TradeApproved.model_validate(data)


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
