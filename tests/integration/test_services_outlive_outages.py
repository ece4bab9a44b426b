"""The projector and the Telegram relay as their own processes (`reconguard projector`, `reconguard
telegram`) outlive their servers' outages: PostgreSQL killed with SIGKILL and started again (crash
recovery answers "the database system is starting up" for a while), and both started while PostgreSQL
is down and the broker cut. Neither process exits; each waits with backoff and goes on, and what was
published meanwhile is projected and sent once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest

from chaos.proxy import CuttableProxy
from infra.db import migrate
from infra.dburl import plain_url
from infra.embedded import EmbeddedPostgres, free_port, wait_until
from infra.kafka import ensure_topics, make_producer, publish_many
from infra.settings import Settings
from schemas import utcnow
from schemas.topics import ALERTS
from tests.support.events import alert
from tests.support.fake_telegram import FakeTelegram, fake_telegram
from tests.support.servers import unique_name

pytestmark = pytest.mark.timeout(300)
USER, CHAT = "u-outage", 7_700_001


@pytest.fixture
def postgres(server_data_dir: Path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of the test's own, to kill."""
    server = EmbeddedPostgres(server_data_dir)
    server.start()
    migrate(server.url)
    asyncio.run(_execute(server.url, "INSERT INTO users (id, display_name, role, telegram_chat_id) "
                                     f"VALUES ('{USER}', 'outage', 'trader', {CHAT})"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    """The Bot API stand-in, in a thread of its own (the services are other processes)."""
    ready, stop, found = threading.Event(), threading.Event(), []

    async def serve() -> None:
        async with fake_telegram(known_chats={CHAT}) as fake:
            found.append(fake)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.1)

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield found[0]
    stop.set()
    thread.join(10)


@pytest.fixture
def proxy(servers) -> Iterator[CuttableProxy]:
    """The broker behind a proxy the test can cut (clients bootstrap through it)."""
    host, port = servers.kafka_bootstrap_servers.rsplit(":", 1)
    cuttable = CuttableProxy(free_port(), (host, int(port)))
    cuttable.start()
    yield cuttable
    cuttable.stop()


async def _execute(url: str, sql: str) -> None:
    connection = await asyncpg.connect(plain_url(url), timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _count(url: str) -> int:
    connection = await asyncpg.connect(plain_url(url), timeout=5)
    try:
        return await connection.fetchval("SELECT count(*) FROM drawdown_alerts WHERE user_id = $1", USER)
    finally:
        await connection.close()


def _projected(url: str) -> int:
    try:
        return asyncio.run(_count(url))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return -1


def _publish(settings: Settings, count: int) -> None:
    async def go() -> None:
        producer = make_producer(settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            await publish_many(producer, ALERTS, settings.topic_prefix,
                               [alert(USER, at=utcnow()) for _ in range(count)])
        finally:
            await producer.stop()

    asyncio.run(go())


@contextmanager
def services(settings: Settings, database_url: str, bootstrap: str, telegram_url: str,
             logs: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    environment = os.environ | {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DATABASE_URL": database_url,
        "RECONGUARD_TOPIC_PREFIX": settings.topic_prefix, "RECONGUARD_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "RECONGUARD_DATA_DIR": str(logs), "TELEGRAM_BOT_TOKEN": "4242:outage",
        "RECONGUARD_TELEGRAM_API_BASE": telegram_url, "RECONGUARD_TELEGRAM_BACKOFF_MAX_SECONDS": "1",
        "RECONGUARD_TELEGRAM_STATUS_ENABLED": "false", "COLUMNS": "250"}
    started = {}
    for name in ("projector", "telegram"):
        with (logs / f"{name}.log").open("wb") as log:
            started[name] = subprocess.Popen([sys.executable, "-m", "reconguard.cli", name], env=environment,
                                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield started
    finally:
        for process in started.values():
            process.send_signal(signal.SIGTERM)
        for process in started.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _alive(processes: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    exited = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
    assert not exited, f"exited: {exited}\n" + "\n".join(
        (logs / f"{name}.log").read_text()[-3000:] for name in exited)


def _kill_postmaster(postgres: EmbeddedPostgres) -> None:
    assert postgres.pid is not None
    os.kill(postgres.pid, signal.SIGKILL)
    wait_until(lambda: not postgres.running(), timeout=20, what="the postmaster to die")


@pytest.fixture
def own_settings(settings: Settings) -> Settings:
    own = settings.model_copy(update={"topic_prefix": unique_name("outage").replace("_", "-")})
    asyncio.run(ensure_topics(own.kafka_bootstrap_servers, own.topic_prefix, partitions=own.topic_partitions))
    return own


def test_projector_and_relay_outlive_a_database_killed_and_restarted(
        own_settings, postgres, telegram, server_data_dir):
    with services(own_settings, postgres.url, own_settings.kafka_bootstrap_servers, telegram.base_url,
                  server_data_dir) as processes:
        _publish(own_settings, 3)
        wait_until(lambda: _projected(postgres.url) == 3, timeout=90, what="3 alerts projected")
        wait_until(lambda: len(telegram.texts_to(CHAT)) == 3, timeout=60, what="3 alerts sent")

        _kill_postmaster(postgres)
        _publish(own_settings, 2)  # published while the database is down
        time.sleep(3)  # both notice the lost connections and wait
        _alive(processes, server_data_dir)
        assert postgres.revive(), "the database is started again (crash recovery)"
        _publish(own_settings, 2)  # and while it recovers

        wait_until(lambda: _projected(postgres.url) == 7, timeout=90, what="all 7 alerts projected")
        wait_until(lambda: len(telegram.texts_to(CHAT)) == 7, timeout=60, what="all 7 alerts sent")
        time.sleep(2)
        assert _projected(postgres.url) == 7 and len(telegram.texts_to(CHAT)) == 7, "each once"
        _alive(processes, server_data_dir)
    projector_log = (server_data_dir / "projector.log").read_text()
    assert "database unavailable" in projector_log, "the projector did see the outage"


def test_started_while_the_database_is_down_and_the_broker_cut_they_wait_then_serve(
        own_settings, postgres, telegram, proxy, server_data_dir):
    _kill_postmaster(postgres)
    proxy.cut()
    bootstrap = f"127.0.0.1:{proxy._listener.getsockname()[1]}"
    with services(own_settings, postgres.url, bootstrap, telegram.base_url, server_data_dir) as processes:
        _said(processes, server_data_dir, "database unavailable")  # each is waiting for the database
        _alive(processes, server_data_dir)
        postgres.revive()
        _said(processes, server_data_dir, "a server it needs unavailable")  # now for the broker
        _alive(processes, server_data_dir)
        proxy.restore()
        _publish(own_settings, 2)
        wait_until(lambda: _projected(postgres.url) == 2, timeout=90, what="2 alerts projected")
        wait_until(lambda: len(telegram.texts_to(CHAT)) == 2, timeout=60, what="2 alerts sent")
        _alive(processes, server_data_dir)


def _said(processes: dict[str, subprocess.Popen[bytes]], logs: Path, words: str) -> None:
    """Wait until every process has logged ``words`` (while none of them exits)."""
    def every_one() -> bool:
        _alive(processes, logs)
        return all(words in (logs / f"{name}.log").read_text() for name in processes)

    wait_until(every_one, timeout=120, what=f"every service to say {words!r}")
