"""The close executor as a service: learn from the log what is done, settle what a crash left open, then
consume close commands. PostgreSQL being down delays only the ledger's projection, never a close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiokafka.errors import KafkaError

from infra.db import make_engine, while_database_down
from infra.kafka import ensure_topics, group_consumer, make_producer
from infra.settings import Settings
from producers.accounts import connect_gateways, load_accounts
from producers.executor.ledger import Ledger, LogLedger
from producers.executor.loop import CONSUMER, Executor, ExecutorConfig, market_calendar
from producers.mt5.gateway import Gateway, GatewayUnavailable
from schemas.topics import CLOSE_COMMANDS, CLOSE_RESULTS

log = logging.getLogger(__name__)


async def run_executor(settings: Settings, *, stop: asyncio.Event, gateways: Mapping[str, Gateway],
                       config: ExecutorConfig | None = None) -> None:
    """Execute close commands for the accounts of ``gateways`` (user id -> terminal) until ``stop``."""
    if settings.kafka_bootstrap_servers is None or settings.database_url is None:
        raise RuntimeError("the executor needs KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL "
                           "(the embedded runtime "
                           "sets both before services start)")
    bootstrap = settings.kafka_bootstrap_servers
    await ensure_topics(bootstrap, settings.topic_prefix, partitions=settings.topic_partitions)
    engine = make_engine(settings.database_url, connect_args={"timeout": 5})
    ledger = LogLedger(Ledger(engine))
    producer = make_producer(bootstrap)
    consumer = group_consumer(settings, CLOSE_COMMANDS, name=CONSUMER)
    executor = Executor(gateways=gateways, ledger=ledger, producer=producer,  # type: ignore[arg-type]
                        prefix=settings.topic_prefix,
                        config=config or ExecutorConfig(next_open=market_calendar(settings)))
    stopped = asyncio.Event()
    writing: asyncio.Task[None] | None = None
    try:
        known = await ledger.load(bootstrap_servers=bootstrap, topic=CLOSE_RESULTS.name(settings.topic_prefix),
                                  fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms)
        log.info("executor: %d close results on the log; those commands are done", known)
        await producer.start()
        await consumer.start()
        writing = asyncio.create_task(ledger.write_behind(stopped), name="executor-ledger")
        await executor.run(consumer, stop=stop)
    finally:
        executor.close()
        stopped.set()
        if writing is not None:
            await asyncio.wait_for(writing, 30)
        await consumer.stop()
        await producer.stop()
        await engine.dispose()


async def serve(settings: Settings, *, stop: asyncio.Event) -> None:
    """The production executor: every user with an MT5 login, through real terminals (RECONGUARD_MT5_*)."""
    if settings.database_url is None:
        raise RuntimeError("the executor reads its accounts from DATABASE_URL")
    database_url = settings.database_url
    loaded: list = []

    async def load() -> None:  # the only time the executor needs the database: wait for it if it is down
        loaded[:] = await load_accounts(database_url=database_url)

    await while_database_down(load, stop=stop, what="executor accounts", maximum=5.0)
    connected: list = []

    async def connect() -> None:  # `reconguard simulator` restarting: its endpoints are asked again
        # Each terminal is attached at its first close (client.ensure_attached), not all of them now.
        connected[:] = await asyncio.to_thread(connect_gateways, loaded, settings.mt5, attach=False)

    await while_database_down(connect, stop=stop, what="executor terminals", maximum=5.0,
                              also=(GatewayUnavailable,))
    if stop.is_set():
        return
    gateways = {ref.user_id: gateway for ref, gateway in connected}
    config = ExecutorConfig(threads=max(1, min(16, len(connected))), next_open=market_calendar(settings))
    # A broker it cannot reach (at start, or a commit refused during a cut) is waited for; a new round
    # learns again from the log what is done, so nothing is closed twice.
    await while_database_down(lambda: run_executor(settings, stop=stop, gateways=gateways, config=config),
                              stop=stop, what="executor", maximum=5.0, also=(KafkaError,))
