"""The close path needs only the broker and the terminal: with its PostgreSQL killed (a real kill -9),
the executor closes, never closes twice (a command whose result is on the log is done, across a
restart too), and projects its ledger into the database once it is back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from infra.db import migrate
from infra.dburl import plain_url
from infra.embedded import EmbeddedPostgres, wait_until
from infra.settings import Settings
from producers.executor.service import run_executor
from tests.integration.producers.logs import insert_users
from tests.integration.producers.test_executor import Desk, results_of, send
from tests.support.servers import REPO_ROOT, unique_name
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def own_database() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, so it can be killed."""
    data_dir = REPO_ROOT / ".reconguard" / unique_name("exec-db")
    server = EmbeddedPostgres(data_dir)
    server.start()
    migrate(server.url)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def executor_service(desk: Desk) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_executor(desk.settings, stop=stop, gateways={desk.user_id: desk.gateway}))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def _ledger_rows(url: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(plain_url(url), timeout=5)
    try:
        return await connection.fetch("SELECT command_id, ticket, status FROM close_executions")
    finally:
        await connection.close()


async def test_closes_once_with_the_database_killed_and_projects_the_ledger_when_it_is_back(
        settings: Settings, own_database: EmbeddedPostgres, producer: AIOKafkaProducer) -> None:
    desk = Desk(settings.model_copy(update={"database_url": own_database.url}))
    await insert_users(own_database.url, [desk.user_id])
    ticket = desk.open()
    os.kill(own_database.pid, signal.SIGKILL)  # the database dies before the executor starts
    wait_until(lambda: not own_database.running(), timeout=20, what="the postmaster to die")

    command = desk.command("EURUSD", [ticket])
    async with executor_service(desk):
        await send(desk, producer, command)
        (closed,) = await results_of(desk, 1)
        assert closed.event_type == "PositionClosed" and closed.payload.ticket == ticket
        assert desk.gateway.sends == 1
    async with executor_service(desk):  # a new executor, the database still down: the log says it is done
        await send(desk, producer, command, times=2)
        answers = await results_of(desk, 3)  # each redelivery is answered with the result on the log
        assert {a.event_id for a in answers} == {closed.event_id}
        assert desk.gateway.sends == 1, "a command whose result is on the log is never executed again"
        assert desk.gateway.positions_get(ticket=ticket) == ()

        await asyncio.to_thread(own_database.revive)  # the database is back: the ledger is projected into it
        rows = await eventually(lambda: _ledger_rows(own_database.url), until=lambda rs: len(rs) == 1,
                                timeout=60, what="the ledger row to reach the database")
    assert (rows[0]["command_id"], rows[0]["ticket"], rows[0]["status"]) == (command.event_id, ticket, "closed")
    assert desk.gateway.sends == 1
