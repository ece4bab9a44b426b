"""Poller CPU per 1,000 accounts per second of polling, against the simulator, publishing to the real broker.

1,000 simulated accounts (1-3 open positions each, USD/GBP/EUR) are polled once per simulated second;
each round reads every terminal, builds the reports and publishes them (publish_many, acknowledged).
CPU is process time spent inside the rounds (the simulated market's own stepping is excluded: in
production that is the broker's machine). Baseline in the same run: the reads alone, without Kafka.
Target: cpu_s_per_1000_accounts_per_s <= 0.1 (issue 15: a tenth of a core per 1,000 accounts at 1 Hz).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from infra.embedded import infrastructure
from infra.kafka import ensure_topics, make_producer
from producers.accounts import AccountRef
from producers.mt5 import constants as c
from producers.mt5.gateway import SimulatorGateway
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal
from producers.poller.client import SymbolCache, read_account
from producers.poller.loop import Poller

ACCOUNTS = 1_000
ROUNDS = 30
WARMUP = 3
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "EURGBP", "XAUUSD")


def simulated_accounts(count: int) -> tuple[SimulatedBroker, list[tuple[AccountRef, SimulatorGateway]]]:
    broker = SimulatedBroker(2026, sessions=False)
    accounts = []
    for i in range(count):
        login, currency = 70_000 + i, ("USD", "GBP", "EUR")[i % 3]
        broker.add_account(login, "pw", currency=currency, balance=50_000.0)
        for k in range(1 + i % 3):
            broker.manual_open(login, SYMBOLS[(i + k) % len(SYMBOLS)], c.ORDER_TYPE_BUY if k % 2 == 0
                               else c.ORDER_TYPE_SELL, 0.1)
        gateway = SimulatorGateway(SimulatedTerminal(broker, login=login, password="pw"))
        assert gateway.initialize(login=login, password="pw", server=broker.server)
        accounts.append((AccountRef(f"u-bench-{i}", login, broker.server, currency), gateway))
    return broker, accounts


def reads_only(broker: SimulatedBroker, accounts: list[tuple[AccountRef, SimulatorGateway]]) -> float:
    """Baseline: CPU seconds of one round of terminal reads, no reports and no Kafka."""
    caches = [SymbolCache() for _ in accounts]
    samples = []
    for _ in range(5):
        broker.advance(1.0)
        started = time.process_time()
        for (ref, gateway), cache in zip(accounts, caches, strict=True):
            read_account(gateway, login=ref.login, cache=cache, previous=None)
        samples.append(time.process_time() - started)
    return statistics.median(samples[1:])


async def _measure(bootstrap: str) -> dict[str, float]:
    await ensure_topics(bootstrap, "bench-poller", partitions=4)
    broker, accounts = simulated_accounts(ACCOUNTS)
    baseline = reads_only(broker, accounts)
    producer = make_producer(bootstrap, linger_ms=10, max_batch_size=512 * 1024)
    await producer.start()
    poller = Poller(accounts=accounts, producer=producer, prefix="bench-poller")
    cpu, wall, messages = [], [], []
    try:
        for round_ in range(WARMUP + ROUNDS):
            broker.advance(1.0)
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            batch = await poller.poll()
            if round_ >= WARMUP:
                cpu.append(time.process_time() - cpu_start)
                wall.append(time.perf_counter() - wall_start)
                messages.append(len(batch.accounts) + len(batch.positions) + len(batch.ticks))
    finally:
        await producer.stop()
    per_round = statistics.mean(cpu)
    return {
        "accounts": ACCOUNTS, "rounds": ROUNDS, "messages_per_round": statistics.mean(messages),
        "cpu_s_per_round": per_round, "cpu_s_per_round_p95": sorted(cpu)[int(0.95 * (len(cpu) - 1))],
        "wall_s_per_round": statistics.mean(wall), "reads_only_cpu_s_per_round": baseline,
        "cpu_s_per_1000_accounts_per_s": per_round * 1000 / ACCOUNTS, "target_cpu_s": 0.1,
    }


def main() -> dict[str, float]:
    # Only the broker is needed: a placeholder URL keeps the embedded PostgreSQL from starting.
    with infrastructure(kafka_bootstrap_servers=None, database_url="postgresql://unused/unused",
                        data_dir=Path(".reconguard") / "bench-poller", fresh=True) as endpoints:
        return asyncio.run(_measure(endpoints.kafka_bootstrap_servers))


if __name__ == "__main__":
    print(main())
