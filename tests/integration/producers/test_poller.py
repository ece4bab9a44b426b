"""The poller against the simulator, publishing to the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from infra.kafka import make_consumer, publish
from infra.settings import Settings
from producers.mt5 import constants as c
from producers.mt5.simulator import SimulatedBroker
from producers.poller.loop import Poller, PollerConfig
from producers.poller.service import honour_sync_commands
from schemas import observed, utcnow
from schemas.commands import SyncAccount
from schemas.common import DealReason
from schemas.topics import ACCOUNT_REPORTS, POSITION_REPORTS, SYNC_COMMANDS, TICKS
from tests.integration.producers.logs import LogReader, demo_accounts

pytestmark = pytest.mark.timeout(90)


def users(n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"u-{run}-{i}" for i in range(n)]


async def play_scenario(seed: int, user_ids: list[str], producer: AIOKafkaProducer, prefix: str, *,
                        parts: int = 1) -> Counter[str]:
    """A few minutes of a seeded market with trades, SL/TP hits and a manual close, polled every second."""
    broker = SimulatedBroker(seed, tick_interval=0.5)
    accounts = demo_accounts(broker, user_ids)
    poller = Poller(accounts=accounts, producer=producer, prefix=prefix, first_seq=0, config=PollerConfig(parts=parts))
    logins = [ref.login for ref, _ in accounts]
    eurusd = broker.tick("EURUSD")
    broker.manual_open(logins[0], "EURUSD", c.ORDER_TYPE_BUY, 1.0, sl=round(eurusd.bid - 0.0004, 5))
    broker.manual_open(logins[1], "XAUUSD", c.ORDER_TYPE_SELL, 0.5)
    closing = broker.manual_open(logins[2], "GBPUSD", c.ORDER_TYPE_BUY, 0.3)
    sent: Counter[str] = Counter()
    for second in range(120):
        if second == 30:
            broker.manual_close(logins[2], closing)
        if second == 60:
            broker.gap("EURUSD", -0.2)  # through the stop of the first account's buy
        broker.advance(1.0)
        batch = await poller.poll()
        sent.update(f"{topic.base}/{e.account_id}" for topic, es in (
            (ACCOUNT_REPORTS, batch.accounts), (POSITION_REPORTS, batch.positions), (TICKS, batch.ticks)) for e in es)
    return sent


def comparable(envelope: Any) -> dict[str, Any]:
    """The payload less what depends on the wall clock (the server clock at the poll is the true time of
    the poll plus the broker's offset; every terminal time comes from the simulated clock)."""
    return envelope.payload.model_dump(mode="json", exclude={"user_id", "server_time"})


@pytest.mark.parametrize("parts", [1, 1000], ids=["one part a round", "an account a part"])
async def test_reports_from_the_same_seed_are_equal(settings: Settings, producer: AIOKafkaProducer,
                                                    parts: int) -> None:
    """Also when the second run publishes each round an account at a time (as a round of no more than
    ``PollerConfig.parts`` accounts is): the same reports, each account's in order."""
    first, second = users(3), users(3)
    sent = await play_scenario(42, first, producer, settings.topic_prefix)
    sent += await play_scenario(42, second, producer, settings.topic_prefix, parts=parts)
    for topic in (ACCOUNT_REPORTS, POSITION_REPORTS, TICKS):
        expected = {u: sent[f"{topic.base}/{u}"] for u in first + second}
        async with LogReader(settings, topic) as log:
            await log.wait_for(lambda es, expected=expected: all(
                len([e for e in es if e.account_id == u]) == n for u, n in expected.items()),
                what=f"every {topic.base} of both runs")
            for a, b in zip(first, second, strict=True):
                assert [comparable(e) for e in log.of(a)] == [comparable(e) for e in log.of(b)], topic.base
    async with LogReader(settings, POSITION_REPORTS) as log:
        await log.wait_for(lambda es: len([e for e in es if e.account_id == first[0]]) >= 120, what="reports")
        deals = [d for e in log.of(first[0]) + log.of(first[2]) for d in e.payload.closed_deals]
        assert {d.reason for d in deals} == {DealReason.SL, DealReason.CLIENT}, "the scenario closes by SL and by hand"


@pytest.mark.parametrize("kind", [
    pytest.param("server", id="terminal lost its trade server (stale data on reads)"),
    pytest.param("ipc", id="terminal process gone (every call fails)"),
])
async def test_a_disconnected_terminal_is_a_sync_error_never_an_empty_list(
        settings: Settings, producer: AIOKafkaProducer, kind: str) -> None:
    broker = SimulatedBroker(7)
    (user_id,) = users(1)
    accounts = demo_accounts(broker, [user_id])
    login = accounts[0][0].login
    # A terminal whose process went away needs initialize() again: here, at every failed poll.
    poller = Poller(accounts=accounts, producer=producer, prefix=settings.topic_prefix, first_seq=0,
                    config=PollerConfig(reattach_every=0.0))
    ticket = broker.manual_open(login, "EURUSD", c.ORDER_TYPE_BUY, 0.2)
    await poller.poll()
    broker.disconnect(login, kind=kind)  # type: ignore[arg-type]
    broker.manual_close(login, ticket)  # closed on the server while the terminal cannot see it
    for _ in range(3):
        broker.advance(1.0)
        await poller.poll()
    broker.reconnect(login)
    broker.advance(1.0)
    await poller.poll()
    async with LogReader(settings, ACCOUNT_REPORTS) as accounts_log, \
            LogReader(settings, POSITION_REPORTS) as positions_log:
        await accounts_log.wait_for(lambda es: len([e for e in es if e.account_id == user_id]) >= 5, what="5 polls")
        await positions_log.wait_for(lambda es: len([e for e in es if e.account_id == user_id]) >= 2, what="2 lists")
        kinds = [e.event_type for e in accounts_log.of(user_id)]
        assert kinds == ["AccountReport"] + ["AccountSyncFailed"] * 3 + ["AccountReport"]
        failed = accounts_log.of(user_id, "AccountSyncFailed")
        assert {f.payload.stage for f in failed} == {"terminal_info"}
        reports = positions_log.of(user_id)
        assert [r.payload.poll_seq for r in reports] == [0, 4], "no position list from a disconnected poll"
        assert [p.ticket for p in reports[0].payload.positions] == [ticket]
        after = reports[1].payload
        assert after.positions == ()
        assert [(d.position_id, d.reason) for d in after.closed_deals] == [(ticket, DealReason.CLIENT)], \
            "the close made during the outage is reported with its deal once the terminal is back"


class SteppedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_manual_syncs_are_honoured_at_most_once_per_account_per_10s(
        settings: Settings, producer: AIOKafkaProducer) -> None:
    broker = SimulatedBroker(3)
    (user_id, other) = users(2)
    clock = SteppedClock()
    poller = Poller(accounts=demo_accounts(broker, [user_id, other]), producer=producer,
                    prefix=settings.topic_prefix, config=PollerConfig(interval=3600.0), clock=clock, first_seq=0)
    assert settings.kafka_bootstrap_servers is not None
    consumer = make_consumer(SYNC_COMMANDS.name(settings.topic_prefix),
                             bootstrap_servers=settings.kafka_bootstrap_servers, group_id=f"sync-{user_id}")
    await consumer.start()
    stop = asyncio.Event()
    syncs = asyncio.create_task(honour_sync_commands(poller, consumer=consumer, producer=producer,
                                                     prefix=settings.topic_prefix, stop=stop))
    polling = asyncio.create_task(poller.run(stop=stop))  # one round now, the next in an hour

    async def request(who: str) -> None:
        await publish(producer, SYNC_COMMANDS, settings.topic_prefix, observed(
            SyncAccount(user_id=who, requested_by="ops"), account_id=who, occurred_at=utcnow()))

    try:
        async with LogReader(settings, ACCOUNT_REPORTS) as log:
            for _ in range(3):
                await request(user_id)
            await request(other)
            await log.wait_for(lambda es: len([e for e in es if e.account_id == other]) == 2, what="other's sync")
            await _wait(lambda: poller.sync_limiter.refused == 2, what="two refusals")
            assert len(log.of(user_id)) == 2, "the round's poll, then three requests within 10 s: one poll"
            clock.now += 9.9
            await request(user_id)
            await _wait(lambda: poller.sync_limiter.refused == 3, what="a third refusal at 9.9 s")
            clock.now += 0.1
            await request(user_id)
            await log.wait_for(lambda es: len([e for e in es if e.account_id == user_id]) == 3, what="2nd sync")
            assert [e.payload.poll_seq for e in log.of(user_id)] == [0, 1, 2]
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(syncs, polling), timeout=10)
        await consumer.stop()


async def _wait(condition: Any, *, what: str) -> None:
    from tests.support.waiting import eventually

    async def probe() -> bool:
        return bool(condition())

    await eventually(probe, timeout=20, what=what)


async def test_absurd_terminal_data_is_a_sync_error_and_the_poller_goes_on(
        settings: Settings, producer: AIOKafkaProducer) -> None:
    from producers.mt5.gateway import SimulatorGateway

    class ZeroPrices(SimulatorGateway):
        def positions_get(self, **filters: Any) -> Any:
            found = super().positions_get(**filters)
            return found and tuple(p._replace(price_open=0.0) for p in found)

    broker = SimulatedBroker(9)
    broken, healthy = users(2)
    (ref_b, gw_b), (ref_h, gw_h) = demo_accounts(broker, [broken, healthy])
    poller = Poller(accounts=[(ref_b, ZeroPrices(gw_b.module)), (ref_h, gw_h)], producer=producer,
                    prefix=settings.topic_prefix, first_seq=0)
    broker.manual_open(ref_b.login, "EURUSD", c.ORDER_TYPE_BUY, 0.1)
    batch = await poller.poll()
    assert [e.event_type for e in batch.accounts] == ["AccountSyncFailed", "AccountReport"]
    assert batch.accounts[0].payload.stage == "parse" and "price_open" in batch.accounts[0].payload.error_message
    assert [e.account_id for e in batch.positions] == [healthy]
