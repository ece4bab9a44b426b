"""Close latency of the executor: a ClosePosition appended -> its result appended.

100 simulated accounts hold one EURUSD position each; one close command at a time is appended to
the real broker, and the executor (real consumer group, Postgres ledger, simulator terminal) closes
the ticket and appends the result. Latency from the two records' broker timestamps, and as the
bench's own reader saw it (appended -> consumed). Baseline in the same run: a bare round trip
through the broker (append a record, consume it) with the same consumer settings.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.db import make_engine, migrate
from infra.dburl import plain_url
from infra.embedded import infrastructure
from infra.kafka import ensure_topics, make_consumer, make_producer
from producers.executor.ledger import Ledger
from producers.executor.loop import Executor, ExecutorConfig
from producers.mt5 import constants as c
from producers.mt5.gateway import SimulatorGateway
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal
from schemas import decode, encode, encode_key, observed, utcnow
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from schemas.topics import CLOSE_COMMANDS, CLOSE_RESULTS

COMMANDS = 100
PREFIX = "bench-executor"


async def _reader(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    consumer = make_consumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest")
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or range(4))]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    return consumer


async def _await_result(reader: AIOKafkaConsumer, command_id: uuid.UUID) -> Any:
    while True:
        for records in (await reader.getmany(timeout_ms=100)).values():
            for record in records:
                if decode(CLOSE_RESULTS, record.value).payload.command_id == command_id:
                    return record


def _accounts() -> tuple[SimulatedBroker, dict[str, SimulatorGateway], dict[str, int]]:
    broker = SimulatedBroker(99, sessions=False)
    gateways, tickets = {}, {}
    for i in range(COMMANDS + 1):
        user_id, login = f"u-close-{i}", 80_000 + i
        broker.add_account(login, "pw", currency="GBP")
        tickets[user_id] = broker.manual_open(login, "EURUSD", c.ORDER_TYPE_BUY, 0.1)
        gateways[user_id] = SimulatorGateway(SimulatedTerminal(broker, login=login, password="pw"))
        assert gateways[user_id].initialize(login=login, password="pw", server=broker.server)
    return broker, gateways, tickets


async def _broker_round_trip(bootstrap: str, producer: Any) -> list[float]:
    """Baseline: append one record and consume it, as the executor's consumer would see it."""
    topic = CLOSE_COMMANDS.name(PREFIX + "-baseline")
    await ensure_topics(bootstrap, PREFIX + "-baseline", partitions=4, topics=(CLOSE_COMMANDS,))
    reader = await _reader(bootstrap, topic)
    samples = []
    try:
        for i in range(COMMANDS):
            started = time.perf_counter()
            await producer.send_and_wait(topic, f"{i}".encode(), key=b"k")
            while not any((await reader.getmany(timeout_ms=100)).values()):
                pass
            samples.append(time.perf_counter() - started)
    finally:
        await reader.stop()
    return samples


async def _measure(bootstrap: str, database_url: str) -> dict[str, float]:
    await asyncio.to_thread(migrate, database_url)
    await ensure_topics(bootstrap, PREFIX, partitions=4)
    _, gateways, tickets = _accounts()
    connection = await asyncpg.connect(plain_url(database_url))
    await connection.executemany("INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING",
                                 [(u,) for u in gateways])
    await connection.close()
    engine = make_engine(database_url)
    producer = make_producer(bootstrap)
    await producer.start()
    consumer = make_consumer(CLOSE_COMMANDS.name(PREFIX), bootstrap_servers=bootstrap,
                             group_id=f"{PREFIX}.executor")
    await consumer.start()
    executor = Executor(gateways=gateways, ledger=Ledger(engine), producer=producer, prefix=PREFIX,
                        config=ExecutorConfig())
    stop = asyncio.Event()
    running = asyncio.create_task(executor.run(consumer, stop=stop))
    reader = await _reader(bootstrap, CLOSE_RESULTS.name(PREFIX))
    appended, observed_latency = [], []
    try:
        for i, (user_id, ticket) in enumerate(tickets.items()):
            command = observed(ClosePosition(user_id=user_id, symbol="EURUSD", tickets=(ticket,),
                                             reason=CloseReason.DRAWDOWN_GUARD, rule="bench"),
                               account_id=user_id, occurred_at=utcnow())
            started = time.perf_counter()
            sent = await producer.send_and_wait(CLOSE_COMMANDS.name(PREFIX), encode(command),
                                                key=encode_key(user_id))
            result = await asyncio.wait_for(_await_result(reader, command.event_id), timeout=30)
            if i == 0:
                continue  # the first waits for the executor's group join
            appended.append((result.timestamp - sent.timestamp) / 1000)
            observed_latency.append(time.perf_counter() - started)
        baseline = await _broker_round_trip(bootstrap, producer)
    finally:
        stop.set()
        await running
        await reader.stop()
        await consumer.stop()
        await producer.stop()
        await engine.dispose()
    return {
        "commands": len(appended),
        "appended_p50_ms": _pct(appended, 50) * 1000, "appended_p99_ms": _pct(appended, 99) * 1000,
        "seen_p50_ms": _pct(observed_latency, 50) * 1000, "seen_p99_ms": _pct(observed_latency, 99) * 1000,
        "broker_round_trip_p50_ms": _pct(baseline, 50) * 1000,
    }


def _pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if q < 100 else max(samples)


def main() -> dict[str, float]:
    with infrastructure(kafka_bootstrap_servers=None, database_url=None,
                        data_dir=Path(".reconguard") / "bench-executor", fresh=True) as endpoints:
        return asyncio.run(_measure(endpoints.kafka_bootstrap_servers, endpoints.database_url))


if __name__ == "__main__":
    print(main())
