"""The poller as a service: the polling loop plus the consumer of manual sync commands."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import replace

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from infra.db import while_database_down
from infra.kafka import dead_letter, ensure_topics, group_consumer, make_producer, send_dead_letter
from infra.metrics import dead_letters_total
from infra.settings import Settings
from producers.accounts import AccountRef, connect_gateways, load_accounts
from producers.mt5.gateway import Gateway
from producers.poller.loop import Poller, PollerConfig
from schemas import DecodeError, decode
from schemas.topics import SYNC_COMMANDS

log = logging.getLogger(__name__)

CONSUMER = "poller-sync"


async def honour_sync_commands(poller: Poller, *, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer,
                               prefix: str, stop: asyncio.Event) -> None:
    """Turn SyncAccount commands into immediate polls (rate limited); commit once each is handled."""
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=200, max_records=100)
        for records in batches.values():
            for record in records:
                await _handle(poller, record, producer=producer, prefix=prefix)
        if batches:
            await consumer.commit()


async def _handle(poller: Poller, record: ConsumerRecord, *, producer: AIOKafkaProducer, prefix: str) -> None:
    try:
        command = decode(SYNC_COMMANDS, record.value).payload
    except DecodeError as error:
        return await _dead_letter(record, error.reason, producer=producer, prefix=prefix)
    try:
        done = poller.request_sync(command.user_id)
    except KeyError:
        reason = f"account {command.user_id!r} is not polled here"
        return await _dead_letter(record, reason, producer=producer, prefix=prefix)
    if done is not None:
        log.info("manual sync of %s requested by %s", command.user_id, command.requested_by)
        await done


async def _dead_letter(record: ConsumerRecord, reason: str, *, producer: AIOKafkaProducer,
                       prefix: str) -> None:
    log.warning("sync command at %s/%d@%d dead-lettered: %s", record.topic, record.partition, record.offset,
                reason)
    await send_dead_letter(producer, prefix, dead_letter(
        consumer=CONSUMER, topic=record.topic, partition=record.partition, offset=record.offset,
        key=record.key, value=record.value, reason=reason))
    dead_letters_total.labels(consumer=CONSUMER).inc()


async def run_poller(settings: Settings, *, stop: asyncio.Event,
                     accounts: Iterable[tuple[AccountRef, Gateway]],
                     config: PollerConfig | None = None) -> None:
    """Poll these (account, terminal) pairs until ``stop``, honouring manual syncs meanwhile."""
    bootstrap = _bootstrap(settings)
    await ensure_topics(bootstrap, settings.topic_prefix, partitions=settings.topic_partitions)
    producer = make_producer(bootstrap, max_batch_size=256 * 1024)  # a round is sent as few large batches
    consumer = group_consumer(settings, SYNC_COMMANDS, name=CONSUMER)
    await producer.start()
    await consumer.start()
    poller = Poller(accounts=accounts, producer=producer, prefix=settings.topic_prefix,
                    config=replace(config or PollerConfig(), parts=settings.poller_parts),
                    markets=settings.guard.markets)
    try:
        async with asyncio.TaskGroup() as tasks:  # either failing stops the other
            tasks.create_task(poller.run(stop=stop))
            tasks.create_task(honour_sync_commands(poller, consumer=consumer, producer=producer,
                                                   prefix=settings.topic_prefix, stop=stop))
    finally:
        poller.close()
        await consumer.stop()
        await producer.stop()


def _bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap_servers is None:
        raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set "
                           "(the embedded runtime sets it before services start)")
    return settings.kafka_bootstrap_servers


async def serve(settings: Settings, *, stop: asyncio.Event) -> None:
    """The production poller: every user with an MT5 login, through real terminals (RECONGUARD_MT5_*)."""
    if settings.database_url is None:
        raise RuntimeError("the poller reads its accounts from DATABASE_URL")
    database_url = settings.database_url
    loaded: list[AccountRef] = []

    async def load() -> None:  # the only time the poller needs the database: wait for it if it is down
        loaded[:] = await load_accounts(database_url=database_url)

    # The database can go down between start-up's migration and this read (an orchestrator restarting
    # the poller during an outage): wait it out, as the executor does, rather than exit.
    await while_database_down(load, stop=stop, what="poller accounts", maximum=5.0)
    if stop.is_set():
        return
    accounts = connect_gateways(loaded, settings.mt5)
    log.info("polling %d accounts", len(accounts))
    # Real terminals block for milliseconds per call: read them from a pool, one thread per few accounts.
    await run_poller(settings, stop=stop, accounts=accounts,
                     config=PollerConfig(threads=max(1, min(32, len(accounts)))))
