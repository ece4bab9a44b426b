"""The embedded demo in one process: simulated market, demo platform, poller and executor.

They share one in-memory SimulatedBroker, so they must run in the same process; each still talks
to it through its own terminal, exactly as the production services talk to theirs.
"""

from __future__ import annotations

import asyncio
import logging
import time

from infra.kafka import ensure_topics, make_producer
from infra.settings import Settings
from producers.demo.accounts import DEMO_USERS, attach, open_accounts, ref, upsert_users
from producers.demo.script import DemoPlatform, Step, default_script, play
from producers.executor.service import run_executor
from producers.mt5.simulator import SimulatedBroker
from producers.platform import LockedAccounts, follow_locks, publish_expected
from producers.poller.loop import PollerConfig
from producers.poller.service import run_poller
from schemas.platform import TradeApproved

log = logging.getLogger(__name__)

DEMO_SEED = 20_240_108


def demo_settings(settings: Settings) -> Settings:
    """The demo's market never closes (``demo_broker``), so the guard's market calendar must not either:
    otherwise on a weekend the demo trades while the market guard thinks every market shut."""
    guard = settings.guard.model_copy(update={"markets": settings.guard.markets.always_open()})
    return settings.model_copy(update={"guard": guard})


def demo_broker(*, seed: int = DEMO_SEED, start_time: float | None = None) -> SimulatedBroker:
    """The demo's market starts at the wall-clock time and never closes (weekends included)."""
    broker = SimulatedBroker(seed, start_time=time.time() if start_time is None else start_time,
                             tick_interval=0.5, sessions=False)
    open_accounts(broker)
    return broker


async def drive_market(broker: SimulatedBroker, *, stop: asyncio.Event, interval: float = 0.25) -> None:
    """Keep the simulated clock on the wall clock (the simulator only moves when told). The market was
    made with the wall-clock time some seconds before this starts: it catches up first, so deals and
    ticks carry the true time rather than a time behind it by the start-up."""
    while not stop.is_set():
        broker.advance_to(max(broker.now(), time.time()))
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass


async def run_platform(settings: Settings, broker: SimulatedBroker, *, stop: asyncio.Event,
                       steps: list[Step] | None = None) -> None:
    """The demo platform: plays the script, publishing each approval to EXPECTED_TRADES."""
    assert settings.kafka_bootstrap_servers is not None
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()

    async def publish(trade: TradeApproved) -> object:
        return await publish_expected(producer, settings.topic_prefix, trade)

    locked = LockedAccounts()
    platform = DemoPlatform(broker, users={u.user_id: u for u in DEMO_USERS},
                            gateways={u.user_id: attach(broker, u) for u in DEMO_USERS}, publish=publish,
                            locked=locked)
    following = asyncio.create_task(follow_locks(settings, locked, stop=stop))
    try:
        await play(platform, default_script() if steps is None else steps, stop=stop)
        await stop.wait()
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await producer.stop()


async def serve(settings: Settings, *, stop: asyncio.Event, broker: SimulatedBroker | None = None,
                steps: list[Step] | None = None) -> None:
    """``reconguard run``'s producers: the demo market and platform, the poller and the executor."""
    if settings.kafka_bootstrap_servers is None or settings.database_url is None:
        raise RuntimeError("the demo needs KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL "
                           "(set by the embedded runtime)")
    broker = broker or demo_broker()
    await ensure_topics(settings.kafka_bootstrap_servers, settings.topic_prefix,
                        partitions=settings.topic_partitions)
    await upsert_users(settings.database_url, server=broker.server)
    polled = [(ref(broker, u), attach(broker, u)) for u in DEMO_USERS]
    closers = {u.user_id: attach(broker, u) for u in DEMO_USERS}
    log.info("demo: %d simulated accounts on %s; divergences scripted over the first two minutes",
             len(DEMO_USERS), broker.server)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(drive_market(broker, stop=stop))
        tasks.create_task(run_platform(settings, broker, stop=stop, steps=steps))
        tasks.create_task(run_poller(settings, stop=stop, accounts=polled, config=PollerConfig()))
        tasks.create_task(run_executor(settings, stop=stop, gateways=closers))
