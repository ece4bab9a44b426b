"""The streams worker end to end on the real broker: reports in, decisions out.

The worker runs as a child process (as `reconguard run` runs it) on this module's topics; each
test uses its own accounts. Guard levels come from the ``users`` table of this module's database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from reconguard.dburl import plain_url
from reconguard.kafka import make_consumer, make_producer, publish
from reconguard.settings import Settings
from schemas import Envelope, decode, utcnow
from schemas.common import DealReason
from schemas.topics import (
    ACCOUNT_REPORTS,
    ACCOUNT_STATE,
    ALERTS,
    CLOSE_COMMANDS,
    DEAD_LETTERS,
    EXPECTED_TRADES,
    POSITION_REPORTS,
    RECONCILIATION,
    Topic,
)
from streams.worker import settings_environment
from tests.support.waiting import eventually
from tests.unit.streams import builders as b

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

OUTPUTS = (RECONCILIATION, ACCOUNT_STATE, ALERTS, CLOSE_COMMANDS, DEAD_LETTERS)


class WorkerProcess:
    """The worker as a child process, restartable, always stopped at the end of the module."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = Path(settings.data_dir) / "logs" / f"streams-test-{settings.topic_prefix}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = os.environ | settings_environment(self.settings) | {"RECONGUARD_WORKER_STATE_FLUSH_SECONDS": "1"}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "streams"], env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class Outputs:
    """Everything the worker published on the output topics, read from the beginning."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        names = {t.name(settings.topic_prefix): t for t in OUTPUTS}
        self.topics: dict[str, Topic] = names
        self.consumer = make_consumer(*names, bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
        self.seen: list[Envelope[Any]] = []

    async def __aenter__(self) -> "Outputs":
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def read(self) -> list[Envelope[Any]]:
        batches = await self.consumer.getmany(timeout_ms=100)
        for tp, messages in batches.items():
            self.seen += [decode(self.topics[tp.topic], m.value) for m in messages]
        return self.seen

    def of(self, account: str, event_type: str | None = None) -> list[Envelope[Any]]:
        return [e for e in self.seen if e.account_id == account and event_type in (None, e.event_type)]

    async def wait_for(self, account: str, event_type: str, *, count: int = 1, timeout: float = 20.0,
                       what: str = "", polling: Any = None) -> list[Envelope[Any]]:
        """Wait for ``count`` outputs; ``polling`` (a coroutine function) plays the poller meanwhile."""
        last_poll = 0.0

        async def probe() -> list[Envelope[Any]]:
            nonlocal last_poll
            if polling is not None and time.monotonic() - last_poll >= 0.5:
                last_poll = time.monotonic()
                await polling()
            await self.read()
            return self.of(account, event_type)

        return await eventually(probe, until=lambda found: len(found) >= count, timeout=timeout,
                                what=what or f"{count} {event_type} for {account}")


def account_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def now_at(envelope: Envelope[Any], when: datetime | None = None) -> Envelope[Any]:
    """The builder's envelope, re-addressed to a fresh account time and id (the guard rejects stale readings)."""
    return envelope.model_copy(update={"occurred_at": when or utcnow(), "event_id": uuid.uuid4()})


def for_account(envelope: Envelope[Any], account: str, when: datetime | None = None) -> Envelope[Any]:
    payload = envelope.payload
    if "user_id" in type(payload).model_fields:
        payload = payload.model_copy(update={"user_id": account})
    return now_at(envelope, when).model_copy(update={"account_id": account, "payload": payload})


def opened_now(position: Any) -> Any:
    return position.model_copy(update={"opened_at": utcnow()})


async def add_account(database_url: str, account: str, *, grace: float) -> None:
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        await connection.execute(
            "INSERT INTO users (id, display_name, close_grace_seconds) VALUES ($1, $1, $2)", account, int(grace))
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def accounts(settings: Settings) -> dict[str, str]:
    names = {"drawdown": 2, "restart": 8, "sync": 2, "divergence": 2, "probe": 2}
    ids = {name: account_id(name) for name in names}

    async def add_all() -> None:
        for name, grace in names.items():
            await add_account(settings.database_url, ids[name], grace=grace)

    asyncio.run(add_all())
    return ids


@pytest.fixture(scope="module")
def worker(settings: Settings, accounts: dict[str, str]) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings)
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def producer(settings: Settings) -> Any:
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
async def outputs(settings: Settings, worker: WorkerProcess, accounts: dict[str, str], producer: Any) -> Any:
    async with Outputs(settings) as reader:
        await wait_until_working(settings, producer, reader, accounts["probe"])
        yield reader


async def wait_until_working(settings: Settings, producer: Any, reader: Outputs, probe: str) -> None:
    """The worker is up once a sync error of the probe account comes back as an indeterminate row."""
    prefix = settings.topic_prefix

    async def poke() -> list[Envelope[Any]]:
        if not reader.of(probe, "ReconciliationIndeterminate"):
            await publish(producer, ACCOUNT_REPORTS, prefix, for_account(b.sync_failed(t=0), probe))
            await asyncio.sleep(0.5)
        await reader.read()
        return reader.of(probe, "ReconciliationIndeterminate")

    await eventually(poke, timeout=45, what="the streams worker to start processing")


async def breach(producer: Any, prefix: str, account: str) -> None:
    """Three held positions, then a peak and two confirming readings beyond the critical level."""
    held = b.positions(b.position(1001, profit_gbp=-400), b.position(1002, profit_gbp=-300),
                       b.position(1003, symbol="XAUUSD", profit_gbp=-500))
    start = utcnow()
    await publish(producer, POSITION_REPORTS, prefix, for_account(held, account, start))
    for i, equity in enumerate((10_000, 8_900, 8_800)):
        reading = for_account(b.account(equity, t=0), account, start + timedelta(milliseconds=50 * (i + 1)))
        await publish(producer, ACCOUNT_REPORTS, prefix, reading)


async def test_a_divergence_reaches_the_reconciliation_topic_with_its_reason(settings, producer, outputs, accounts):
    account, prefix = accounts["divergence"], settings.topic_prefix
    await publish(producer, EXPECTED_TRADES, prefix, for_account(b.approved(ticket=1001), account))
    half = b.positions(opened_now(b.position(1001, volume=0.05)))
    detected = await outputs.wait_for(account, "DivergenceDetected", polling=lambda: publish(
        producer, POSITION_REPORTS, prefix, for_account(half, account)))
    assert [d.payload.divergence_reason.value for d in detected] == ["volume_mismatch"]
    gapped = b.positions(deals=(b.deal(1001, reason=DealReason.SL, price=1.08),))
    await publish(producer, POSITION_REPORTS, prefix, for_account(gapped, account))
    detected = await outputs.wait_for(account, "DivergenceDetected", count=2)
    gap = detected[1].payload
    assert (gap.divergence_reason.value, gap.close_reason.value, gap.matched, gap.status.value) == (
        "gap", "sl", 0, "divergence")
    resolved = await outputs.wait_for(account, "DivergenceResolved")
    assert resolved[0].payload.divergence_reason.value == "volume_mismatch"


async def test_a_critical_breach_warns_at_once_and_closes_after_the_grace(settings, producer, outputs, accounts):
    account = accounts["drawdown"]
    await breach(producer, settings.topic_prefix, account)
    warning = (await outputs.wait_for(account, "GuardAlertRaised", timeout=10))[0]
    assert (warning.payload.alert_type.value, warning.payload.action_taken.value) == (
        "drawdown_critical", "warning_sent")
    assert "positions close in 2 s" in warning.payload.message
    reading_at = datetime.fromisoformat(warning.payload.details["reading_at"])
    assert (warning.recorded_at - reading_at).total_seconds() < 1.0, "the warning must come at once"
    commands = await outputs.wait_for(account, "ClosePosition", count=2, timeout=15)
    delay = (min(c.recorded_at for c in commands) - reading_at).total_seconds()
    assert 2.0 <= delay <= 3.0, f"close commands came {delay:.2f}s after the breach (grace 2 s)"
    assert sorted((c.payload.symbol, c.payload.tickets) for c in commands) == [
        ("EURUSD", (1001, 1002)), ("XAUUSD", (1003,))]
    alerts = await outputs.wait_for(account, "GuardAlertRaised", count=2)
    closed = alerts[1].payload
    assert (closed.action_taken.value, closed.positions_closed_count, closed.total_loss_gbp) == (
        "positions_closed", 3, 1200.0)


async def test_a_sync_error_is_indeterminate_and_closes_nothing(settings, producer, outputs, accounts):
    account, prefix = accounts["sync"], settings.topic_prefix
    await publish(producer, EXPECTED_TRADES, prefix, for_account(b.approved(ticket=1001), account))
    held = b.positions(opened_now(b.position(1001)))
    await outputs.wait_for(account, "PositionMatched", polling=lambda: publish(
        producer, POSITION_REPORTS, prefix, for_account(held, account)))
    start = utcnow()
    await publish(producer, ACCOUNT_REPORTS, prefix, for_account(b.account(10_000, t=0), account, start))
    for i in range(1, 4):  # the terminal disconnects: sync errors and a reading of zero equity
        await publish(producer, ACCOUNT_REPORTS, prefix,
                      for_account(b.sync_failed(t=0), account, start + timedelta(milliseconds=100 * i)))
    await publish(producer, ACCOUNT_REPORTS, prefix,
                  for_account(b.account(0, t=0), account, start + timedelta(milliseconds=500)))
    indeterminate = await outputs.wait_for(account, "ReconciliationIndeterminate")
    assert (indeterminate[0].payload.matched, indeterminate[0].payload.status.value) == (2, "failed")
    settle = time.monotonic() + 3
    while time.monotonic() < settle:  # nothing may follow: no close, no divergence, no alert
        await outputs.read()
    assert {e.event_type for e in outputs.of(account)} == {
        "PositionMatched", "ReconciliationIndeterminate", "AccountAssessed"}
    snapshots = [e.payload for e in outputs.of(account, "AccountAssessed")]
    assert {s.equity_gbp for s in snapshots} == {10_000}, "the zero-equity reading of a disconnect is rejected"
    assert any(s.sync_error for s in snapshots)


async def test_a_restart_inside_the_grace_still_closes_once_and_on_time(settings, producer, outputs, worker,
                                                                         accounts):
    account = accounts["restart"]
    await breach(producer, settings.topic_prefix, account)
    warning = (await outputs.wait_for(account, "GuardAlertRaised", timeout=10))[0]
    deadline = datetime.fromisoformat(warning.payload.details["deadline"])
    worker.stop()
    assert not outputs.of(account, "ClosePosition")
    worker.start()
    commands = await outputs.wait_for(account, "ClosePosition", count=2, timeout=30)
    fired_at = min(c.recorded_at for c in commands)
    lateness = (fired_at - deadline).total_seconds()
    assert 0 <= lateness <= 1.5, f"closed {lateness:.2f}s after the deadline"
    await outputs.wait_for(account, "GuardAlertRaised", count=2)
    settle = time.monotonic() + 3
    while time.monotonic() < settle:
        await outputs.read()
    assert len({c.event_id for c in outputs.of(account, "ClosePosition")}) == 2


async def test_a_malformed_message_is_dead_lettered_and_the_worker_keeps_going(settings, producer, outputs,
                                                                               accounts):
    account = account_id("garbage")
    await producer.send_and_wait(ACCOUNT_REPORTS.name(settings.topic_prefix), b"{not json", key=account.encode())
    letters = await outputs.wait_for(account, "MessageDeadLettered")
    assert "malformed JSON" in letters[0].payload.reason
    after = account_id("after-garbage")
    await publish(producer, ACCOUNT_REPORTS, settings.topic_prefix, for_account(b.account(10_000, t=0), after))
    assessed = await outputs.wait_for(after, "AccountAssessed")
    assert assessed[0].payload.equity_gbp == 10_000
