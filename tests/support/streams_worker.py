"""The streams worker (and any other service) as a child process, and a reader of everything it published.

Shared by the worker's integration tests: the worker runs as ``python -m streams`` (as
``reconguard run`` runs it) on a test module's topics. A module that defines an ``accounts``
fixture (a dict with a ``"probe"`` account in its database) gets a running worker and a reader
of its outputs by importing the ``worker`` and ``outputs`` fixtures below.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from infra.dburl import plain_url
from infra.kafka import make_consumer, publish
from infra.settings import Settings, environment
from schemas import Envelope, decode, utcnow
from schemas.topics import ACCOUNT_REPORTS, DEAD_LETTERS, Topic, written_by
from tests.support.waiting import eventually
from tests.unit.streams import builders as b

OUTPUTS = (*written_by("streams"), DEAD_LETTERS)


STREAMS_WORKER = ("-m", "streams")
PROJECTOR = ("-m", "reconguard", "projector")


class WorkerProcess:
    """A service as a child process (the streams worker unless ``command`` says otherwise),
    restartable, always stopped at the end of the module."""

    def __init__(self, settings: Settings, *, name: str = "streams", command: tuple[str, ...] = STREAMS_WORKER
                 ) -> None:
        self.settings = settings
        self.command = command
        self.log = Path(settings.data_dir) / "logs" / f"{name}-test-{settings.topic_prefix}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = os.environ | environment(self.settings) | {"RECONGUARD_WORKER_STATE_FLUSH_SECONDS": "1"}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, *self.command], env=env, stdout=out,
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


async def group_state(settings: Settings, group_id: str) -> tuple[str, int]:
    """A consumer group's state and number of members, as the broker describes it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group_id])
    finally:
        await admin.close()
    _error, _name, state, _protocol_type, _protocol, members = response.groups[0]
    return state, len(members)


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


@pytest.fixture(scope="module")
def worker(settings: Settings, accounts: dict[str, str]) -> Iterator[WorkerProcess]:
    """The module's worker, started once the module's accounts are users."""
    process = WorkerProcess(settings)
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def outputs(settings: Settings, worker: WorkerProcess, accounts: dict[str, str], producer: Any
                  ) -> AsyncIterator[Outputs]:
    """A reader of the worker's outputs, once the worker is processing (its probe account answered)."""
    async with Outputs(settings) as reader:
        await wait_until_working(settings, producer, reader, accounts["probe"])
        yield reader
