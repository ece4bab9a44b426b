"""The demo platform against `reconguard simulator`, for the separate-process topology (deploy/, make chaos).

The same users and script as the embedded demo, but the market is another process: the script's
trader hands and market moves go through the simulator's control port (``broker``), its orders
through each demo account's terminal port, with the production mt5linux gateway. Every account the
simulator serves becomes a user (the demo's four, and ``u-load-NNN`` for the load accounts), so the
production poller and executor, which read their accounts from ``users``, serve them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from aiokafka.errors import KafkaError

from infra.db import while_database_down
from infra.kafka import ensure_topics, make_producer
from infra.settings import Settings
from producers.demo.accounts import DEMO_PASSWORD, DEMO_USERS, DemoUser, upsert_users
from producers.demo.script import DemoPlatform, Step, default_script, play
from producers.mt5.gateway import Mt5LinuxGateway, simulator_endpoints
from producers.platform import publish_expected
from schemas.platform import TradeApproved

log = logging.getLogger(__name__)

LOAD_CHAT_BASE = 700_200_000
_GONE = (EOFError, OSError, TimeoutError)


def users_of(endpoints: dict[int, tuple[str, int]]) -> list[DemoUser]:
    """The demo's users plus one flat GBP user per other account the simulator serves."""
    demo = {u.login: u for u in DEMO_USERS}
    load = sorted(login for login in endpoints if login not in demo)
    return [demo[login] for login in sorted(demo) if login in endpoints] + [
        DemoUser(f"u-load-{i + 1:03d}", f"Load {i + 1}", login, "GBP", LOAD_CHAT_BASE + i + 1, 5.0, 10.0, 5.0)
        for i, login in enumerate(load)]


class RemoteBroker:
    """The simulator's ``broker`` hooks by value, reconnecting after the simulator restarts."""

    def __init__(self, address: str, *, timeout: float = 10.0) -> None:
        self.address, self.timeout = address, timeout
        self._connection: Any = None
        self._lock = threading.Lock()
        self.server = "ReconGuard-Demo"

    def _remote(self) -> Any:
        import rpyc
        from rpyc.core.service import ClassicClient

        if self._connection is None:
            host, _, port = self.address.rpartition(":")
            self._connection = rpyc.connect(host, int(port), service=ClassicClient,
                                            config={"sync_request_timeout": self.timeout, "allow_pickle": True})
        return self._connection.namespace["broker"]

    def __getattr__(self, name: str) -> Any:
        import rpyc

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                try:
                    remote = self._remote()
                except _GONE:  # a connection from before a restart: one fresh try, nothing was sent yet
                    self._drop()
                    remote = self._remote()
                try:
                    return rpyc.classic.obtain(getattr(remote, name)(*args, **kwargs))
                except _GONE:
                    self._drop()
                    raise

        return call

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


async def serve(settings: Settings, *, stop: asyncio.Event, simulator: str,
                steps: list[Step] | None = None) -> None:
    """Make every simulated account a user, then play the demo script until ``stop``."""
    if settings.kafka_bootstrap_servers is None or settings.database_url is None:
        raise RuntimeError("the demo platform needs KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL")
    text = await asyncio.to_thread(simulator_endpoints, simulator)
    endpoints = settings.mt5.model_copy(update={"endpoints": text}).endpoint_map()
    broker = RemoteBroker(simulator)
    users = users_of(endpoints)
    database_url, bootstrap = settings.database_url, settings.kafka_bootstrap_servers

    async def prepare() -> None:  # the database or the broker may be down when it starts: wait them out
        await upsert_users(database_url, server=broker.server, users=users)
        await ensure_topics(bootstrap, settings.topic_prefix, partitions=settings.topic_partitions)

    await while_database_down(prepare, stop=stop, what="demo platform", maximum=5.0, also=(KafkaError,))
    if stop.is_set():
        return
    log.info("demo platform: %d users on the simulator at %s", len(users), simulator)
    gateways = {}
    for user in DEMO_USERS:
        gateway = Mt5LinuxGateway(*endpoints[user.login], connect=False)
        if not gateway.initialize(login=user.login, password=DEMO_PASSWORD):
            log.warning("demo terminal of %s did not start: %s", user.user_id, gateway.last_error())
        gateways[user.user_id] = gateway
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()

    async def publish(trade: TradeApproved) -> object:
        return await publish_expected(producer, settings.topic_prefix, trade)

    platform = DemoPlatform(broker, users={u.user_id: u for u in DEMO_USERS},  # type: ignore[arg-type]
                            gateways=gateways, publish=publish)
    try:
        await play(platform, default_script() if steps is None else steps, stop=stop)
        await stop.wait()
    finally:
        await producer.stop()
        for gateway in gateways.values():
            gateway.close()
