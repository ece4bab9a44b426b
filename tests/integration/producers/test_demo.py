"""The embedded demo in one process: the platform, the poller and the executor share one simulator."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from infra.dburl import plain_url
from infra.kafka import make_producer, publish
from infra.settings import Settings
from producers.demo.script import BUY, Step
from producers.demo.service import demo_broker, serve
from schemas import observed, utcnow
from schemas.commands import ClosePosition
from schemas.common import CloseReason, DealReason
from schemas.topics import CLOSE_COMMANDS, CLOSE_RESULTS, EXPECTED_TRADES, POSITION_REPORTS
from tests.integration.producers.logs import LogReader

pytestmark = pytest.mark.timeout(120)


async def test_the_demo_places_approvals_polls_them_and_closes_on_command(settings: Settings) -> None:
    assert settings.database_url is not None and settings.kafka_bootstrap_servers is not None
    steps = [Step(0.5, "alice: EURUSD buy", lambda p: p.approve("sig-alice-t", "u-alice", "EURUSD", BUY, 0.5,
                                                                sl_points=300, tp_points=600))]
    stop = asyncio.Event()
    demo = asyncio.create_task(serve(settings, stop=stop, broker=demo_broker(), steps=steps))
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        async with LogReader(settings, EXPECTED_TRADES) as trades:
            (approved,) = await trades.wait_for(lambda es: len(es) >= 1, what="the approval", timeout=30)
        ticket = approved.payload.mt5_position_id
        assert ticket is not None and approved.account_id == "u-alice"

        connection = await asyncpg.connect(plain_url(settings.database_url))
        try:
            users = await connection.fetch("SELECT id, mt5_login, telegram_chat_id FROM users ORDER BY id")
        finally:
            await connection.close()
        assert [u["id"] for u in users] == ["u-alice", "u-bob", "u-carol", "u-dave"]
        assert all(u["mt5_login"] and u["telegram_chat_id"] for u in users)

        async with LogReader(settings, POSITION_REPORTS) as reports:
            await reports.wait_for(lambda es: any(ticket in {p.ticket for p in e.payload.positions} for e in es),
                                   what="the placed position in a report")
            await publish(producer, CLOSE_COMMANDS, settings.topic_prefix, observed(
                ClosePosition(user_id="u-alice", symbol="EURUSD", tickets=(ticket,), reason=CloseReason.PLATFORM,
                              rule="test"), account_id="u-alice", occurred_at=utcnow()))
            async with LogReader(settings, CLOSE_RESULTS) as results:
                (closed,) = await results.wait_for(lambda es: len(es) >= 1, what="the close result")
            assert (closed.event_type, closed.payload.ticket) == ("PositionClosed", ticket)
            gone = await reports.wait_for(lambda es: any(d.position_id == ticket for e in es
                                                         for d in e.payload.closed_deals), what="the closing deal")
            deal = next(d for e in gone for d in e.payload.closed_deals if d.position_id == ticket)
            assert deal.reason is DealReason.EXPERT
    finally:
        stop.set()
        await producer.stop()
        await asyncio.wait_for(demo, timeout=20)
