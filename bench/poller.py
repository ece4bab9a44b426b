"""Poller CPU per 1,000 accounts per second of polling, against the simulator, publishing to the real broker.

In process: 1,000 simulated accounts (1-3 open positions each, USD/GBP/EUR) are polled once per
simulated second; each round reads every terminal, builds the reports and publishes them (in record
batches, acknowledged). CPU is process time spent inside the rounds (the simulated market's own
stepping is excluded: in production that is the broker's machine; reading the terminals is not).
Baseline in the same run: the reads alone, without Kafka.
Target: cpu_s_per_1000_accounts_per_s <= 0.1 (issue 15: a tenth of a core per 1,000 accounts at 1 Hz).

Over the bridge (``bridge_*``), as deployed: `reconguard simulator` in a process of its own serves
the same number of accounts (GBP, 1-3 positions each), the poller reads them through the mt5linux
gateway with its thread pool, as `reconguard poller` does. CPU of each process over the rounds: the
poller's (reads, reports, publishing) and the simulator's (serving the terminals, and its clock).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from aiokafka import AIOKafkaProducer

from chaos.topology import free_port_block
from infra.embedded import infrastructure, wait_until
from infra.kafka import ensure_topics, make_producer
from producers.accounts import AccountRef
from producers.demo.accounts import DEMO_PASSWORD
from producers.demo.remote import RemoteBroker
from producers.mt5 import constants as c
from producers.mt5.gateway import GatewayUnavailable, Mt5LinuxGateway, SimulatorGateway, simulator_endpoints
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal
from producers.mt5.simulator.server import load_login
from producers.poller.client import SymbolCache, read_account
from producers.poller.loop import Poller, PollerConfig

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
    try:
        numbers = await _in_process(producer, broker, accounts, baseline)
        with served_accounts(ACCOUNTS) as (simulator, bridged):
            return {**numbers, **await _over_the_bridge(producer, bridged, simulator)}
    finally:
        await producer.stop()


async def _in_process(producer: AIOKafkaProducer, broker: SimulatedBroker,
                      accounts: list[tuple[AccountRef, SimulatorGateway]], baseline: float) -> dict[str, float]:
    poller = Poller(accounts=accounts, producer=producer, prefix="bench-poller")
    cpu, wall, messages = [], [], []
    for round_ in range(WARMUP + ROUNDS):
        broker.advance(1.0)
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        batch = await poller.poll()
        if round_ >= WARMUP:
            cpu.append(time.process_time() - cpu_start)
            wall.append(time.perf_counter() - wall_start)
            messages.append(len(batch.accounts) + len(batch.positions) + len(batch.ticks))
    per_round = statistics.mean(cpu)
    return {
        "accounts": ACCOUNTS, "rounds": ROUNDS, "messages_per_round": statistics.mean(messages),
        "cpu_s_per_round": per_round, "cpu_s_per_round_p95": sorted(cpu)[int(0.95 * (len(cpu) - 1))],
        "wall_s_per_round": statistics.mean(wall), "reads_only_cpu_s_per_round": baseline,
        "cpu_s_per_1000_accounts_per_s": per_round * 1000 / ACCOUNTS, "target_cpu_s": 0.1,
    }


@contextmanager
def served_accounts(count: int) -> Iterator[tuple[psutil.Process, list[tuple[AccountRef, Mt5LinuxGateway]]]]:
    """`reconguard simulator` with ``count`` load accounts holding 1-3 positions each, and a connected
    mt5linux gateway per load account."""
    port = free_port_block(count + 6)
    process = subprocess.Popen([sys.executable, "-m", "reconguard.cli", "simulator", "--accounts", str(count),
                                "--base-port", str(port), "--state-dir", "-"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gateways: list[Mt5LinuxGateway] = []
    try:
        wait_until(lambda: _answers(f"127.0.0.1:{port}"), timeout=300, what="the simulator's control port")
        broker = RemoteBroker(f"127.0.0.1:{port}")
        for i in range(count):
            for k in range(1 + i % 3):
                broker.manual_open(load_login(i), SYMBOLS[(i + k) % len(SYMBOLS)],
                                   c.ORDER_TYPE_BUY if k % 2 == 0 else c.ORDER_TYPE_SELL, 0.1)
        logins = {load_login(i) for i in range(count)}
        accounts = []
        for entry in simulator_endpoints(f"127.0.0.1:{port}").split(","):
            login, _, address = entry.partition("=")
            if int(login) in logins:
                gateway = Mt5LinuxGateway("127.0.0.1", int(address.rpartition(":")[2]))
                gateways.append(gateway)
                assert gateway.initialize(login=int(login), password=DEMO_PASSWORD), gateway.last_error()
                accounts.append((AccountRef(f"u-bridge-{login}", int(login), broker.server, "GBP"), gateway))
        yield psutil.Process(process.pid), accounts
    finally:
        for gateway in gateways:
            gateway.close()
        process.terminate()
        process.wait(timeout=30)


def _answers(address: str) -> bool:
    try:
        simulator_endpoints(address, timeout=2)
    except GatewayUnavailable:
        return False
    return True


async def _over_the_bridge(producer: AIOKafkaProducer, accounts: list[tuple[AccountRef, Mt5LinuxGateway]],
                           simulator: psutil.Process) -> dict[str, float]:
    poller = Poller(accounts=accounts, producer=producer, prefix="bench-poller",
                    config=PollerConfig(threads=max(1, min(32, len(accounts)))))  # as `reconguard poller`
    ours, theirs, wall = [], [], []
    try:
        for round_ in range(WARMUP + ROUNDS):
            started = time.process_time(), sum(simulator.cpu_times()[:2]), time.perf_counter()
            batch = await poller.poll()
            assert not batch.failed, batch.accounts[0].payload
            if round_ >= WARMUP:
                ours.append(time.process_time() - started[0])
                theirs.append(sum(simulator.cpu_times()[:2]) - started[1])
                wall.append(time.perf_counter() - started[2])
    finally:
        poller.close()
    per_1000 = 1000 / len(accounts)
    return {"bridge_poller_cpu_s_per_1000_accounts_per_s": statistics.mean(ours) * per_1000,
            "bridge_simulator_cpu_s_per_1000_accounts_per_s": statistics.mean(theirs) * per_1000,
            "bridge_wall_s_per_round": statistics.mean(wall)}


def main() -> dict[str, float]:
    # Only the broker is needed: a placeholder URL keeps the embedded PostgreSQL from starting.
    with infrastructure(kafka_bootstrap_servers=None, database_url="postgresql://unused/unused",
                        data_dir=Path(".reconguard") / "bench-poller", fresh=True) as endpoints:
        return asyncio.run(_measure(endpoints.kafka_bootstrap_servers))


if __name__ == "__main__":
    print(main())
