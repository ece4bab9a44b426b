"""The alerts relay: each guard alert state a person needs, from Kafka to the owner's Telegram chat.

One message per alert state change a person needs (``messages.told``): the warning (or the market
guard's "closing"), the confirmation with each close's realised P&L, a failure, an escalation; and
one when the account is locked after a liquidation and one when the lock ends. An escalation
("liquidation failed") also goes to every admin with a linked chat, and so does every operator alert
(a service in a crash loop, a warning published late), which goes to no account's owner.

Exactly once, as far as Telegram allows:
- before sending, ``telegram_deliveries`` is asked whether this event id already went out (to an
  admin's chat: the id derived from the event and the chat)
  (a redelivery, a replay, a restart, another group reading the same topic: none sends twice);
- after Telegram accepts a message its event id is recorded at once;
- the Kafka offset is committed only after that (or after a permanent refusal, or for an event
  that has no chat to go to), so a crash or stop before it means the event is read again.
The one window left is a crash between Telegram's answer and the insert (milliseconds).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiogram import Bot
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import async_sessionmaker

from infra.db import DATABASE_DOWN
from infra.kafka import dead_letter, send_dead_letter
from infra.metrics import dead_letters_total, telegram_delivery_latency_seconds, telegram_messages_total
from infra.tables import TelegramDelivery, User
from reconguard.telegram.messages import render
from reconguard.telegram.sending import Backoff, Interrupted, Refused, Sent, send
from schemas import DecodeError, Envelope, Topic, decode, derive_id, utcnow
from schemas.operations import OperatorAlertRaised
from schemas.topics import ACCOUNT_LOCKS, ALERTS, OPERATOR_ALERTS

log = logging.getLogger(__name__)
CONSUMER = "telegram"
TOPICS: tuple[Topic, ...] = (ALERTS, ACCOUNT_LOCKS, OPERATOR_ALERTS)
T = TypeVar("T")


#: What a database client here may raise while PostgreSQL is down, restarting or frozen: SQLAlchemy's
#: wrapped errors, and what asyncpg raises unwrapped while connecting ("the database system is starting
#: up" after a kill) or SQLAlchemy's pool when no connection came back in time.
DATABASE_UNAVAILABLE = (DBAPIError, PoolTimeout, *DATABASE_DOWN)


class _Stopped(Exception):
    """``stop`` was set while waiting for the database: leave the offset uncommitted."""


def account_label(user: User) -> str:
    return f"{user.id} (MT5 {user.mt5_login})" if user.mt5_login else user.id


class AlertRelay:
    def __init__(
        self,
        *,
        bot: Bot,
        sessions: async_sessionmaker,
        producer: AIOKafkaProducer,
        prefix: str,
        backoff: Backoff,
        stop: asyncio.Event,
    ) -> None:
        self._bot = bot
        self._sessions = sessions
        self._producer = producer
        self._prefix = prefix
        self._backoff = backoff
        self._stop = stop
        self._topics = {topic.name(prefix): topic for topic in TOPICS}

    async def run(self, consumer: AIOKafkaConsumer) -> None:
        """Relay until ``stop``; commits each partition's progress after every batch."""
        while not self._stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=100)
            for tp, records in batches.items():
                if not await self._relay_partition(consumer, tp, records):
                    return

    async def _relay_partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord]
    ) -> bool:
        """Relay one partition's records in order; False if stopped part-way."""
        done: int | None = None
        finished = True
        for record in records:
            try:
                if not await self.handle(record):
                    finished = False
                    break
            except _Stopped:
                finished = False
                break
            done = record.offset + 1
        if done is not None:
            await _commit(consumer, tp, done)
        return finished

    async def handle(self, record: ConsumerRecord) -> bool:
        """Deliver one record (or decide it needs no delivery); False if interrupted by ``stop``."""
        topic = self._topics[record.topic]
        try:
            envelope = decode(topic, record.value)
        except DecodeError as error:
            await self._dead_letter(record, error.reason)
            return True
        for_operators = isinstance(envelope.payload, OperatorAlertRaised)  # keyed by a service, not an account
        user = None if for_operators else await self._retrying(lambda: self._owner(envelope), what="look up the owner")
        text = render(envelope, account=account_label(user) if user else envelope.account_id)
        if text is None:
            return True
        owner_chat = user.telegram_chat_id if user is not None else None
        if owner_chat is None and not for_operators:
            log.warning(
                "%s %s for %s not sent: no Telegram chat is linked to that account",
                envelope.event_type,
                envelope.event_id,
                envelope.account_id,
            )
            telegram_messages_total.labels(outcome="no_chat").inc()
        recipients = {owner_chat: envelope.event_id} if owner_chat is not None else {}
        if for_operators or getattr(envelope.payload, "status", None) == "escalated":
            admins = await self._retrying(self._admin_chats, what="look up the admins")
            recipients |= {chat: derive_id(envelope.event_id, f"telegram/{chat}") for chat in admins
                           if chat not in recipients}
        for chat_id, delivery_id in recipients.items():
            if not await self._deliver_once(envelope, delivery_id, chat_id=chat_id, text=text):
                return False
        return True

    async def _deliver_once(self, envelope: Envelope[Any], delivery_id: uuid.UUID, *, chat_id: int,
                            text: str) -> bool:
        if await self._retrying(lambda: self._delivered(delivery_id), what="check deliveries"):
            telegram_messages_total.labels(outcome="duplicate").inc()
            return True
        return await self._deliver(envelope, delivery_id, chat_id=chat_id, text=text)

    async def _deliver(self, envelope: Envelope[Any], delivery_id: uuid.UUID, *, chat_id: int, text: str) -> bool:
        outcome = await send(self._bot, chat_id=chat_id, text=text, backoff=self._backoff, stop=self._stop)
        if isinstance(outcome, Interrupted):
            return False
        if isinstance(outcome, Refused):
            log.error(
                "%s %s for %s refused by Telegram for chat %s: %s",
                envelope.event_type,
                envelope.event_id,
                envelope.account_id,
                chat_id,
                outcome.reason,
            )
            telegram_messages_total.labels(outcome="failed_permanent").inc()
            return True
        await self._record(delivery_id, outcome)
        telegram_messages_total.labels(outcome="sent").inc()
        telegram_delivery_latency_seconds.observe(max(0.0, (utcnow() - envelope.occurred_at).total_seconds()))
        return True

    async def _record(self, event_id: uuid.UUID, sent: Sent) -> None:
        async def insert_row() -> None:
            async with self._sessions.begin() as session:
                await session.execute(
                    insert(TelegramDelivery)
                    .values(event_id=event_id, chat_id=sent.chat_id, message_id=sent.message_id)
                    .on_conflict_do_nothing()
                )

        # Shielded: once Telegram has the message, our own shutdown must not skip the record.
        await asyncio.shield(self._retrying(insert_row, what="record a delivery", stoppable=False))

    async def _owner(self, envelope: Envelope[Any]) -> User | None:
        user_id = getattr(envelope.payload, "user_id", None) or envelope.account_id
        async with self._sessions() as session:
            return await session.get(User, user_id)

    async def _admin_chats(self) -> list[int]:
        async with self._sessions() as session:
            chats = await session.scalars(select(User.telegram_chat_id).where(
                User.role == "admin", User.telegram_chat_id.is_not(None)).order_by(User.id))
        return [chat for chat in chats if chat is not None]

    async def _delivered(self, event_id: uuid.UUID) -> bool:
        async with self._sessions() as session:
            found = await session.scalar(
                select(TelegramDelivery.event_id).where(TelegramDelivery.event_id == event_id)
            )
        return found is not None

    async def _retrying(
        self, operation: Callable[[], Awaitable[T]], *, what: str, stoppable: bool = True
    ) -> T:
        """The database is needed to stay exactly-once: wait for it rather than guess."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await operation()
            except DATABASE_UNAVAILABLE as error:
                delay = self._backoff.delay(attempt)
                log.warning("cannot %s (%s); retrying in %.1fs", what, type(error).__name__, delay)
            if stoppable and self._stop.is_set():
                raise _Stopped
            await asyncio.sleep(delay)

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        log.warning(
            "unusable message at %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason
        )
        envelope = dead_letter(
            consumer=CONSUMER,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            reason=reason,
        )
        await send_dead_letter(self._producer, self._prefix, envelope)
        dead_letters_total.labels(consumer=CONSUMER).inc()
        telegram_messages_total.labels(outcome="dead_letter").inc()


async def _commit(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
    try:
        await consumer.commit({tp: offset})
    except (CommitFailedError, IllegalStateError, KafkaError) as error:
        # The partition moved to another member; it re-reads from the last commit and the
        # delivery table keeps it from sending anything twice.
        log.info("commit of %s@%d not accepted (%s)", tp, offset, type(error).__name__)
