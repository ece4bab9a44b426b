"""The close executor against the simulator, on the real broker and the real Postgres ledger."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from infra.db import make_engine
from infra.kafka import make_consumer, publish
from infra.settings import Settings
from producers.executor.ledger import Ledger
from producers.executor.loop import Executor, ExecutorConfig
from producers.executor.parsing import close_comment, close_request, filling_mode
from producers.mt5 import constants as c
from producers.mt5.gateway import SimulatorGateway
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal
from schemas import Envelope, observed
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from schemas.topics import CLOSE_COMMANDS, CLOSE_RESULTS, DEAD_LETTERS
from tests.integration.producers.logs import LogReader, insert_users

pytestmark = pytest.mark.timeout(90)


class CountingGateway(SimulatorGateway):
    """Counts order_send calls: the one number that proves "never executed twice"."""

    def __init__(self, module: Any) -> None:
        super().__init__(module)
        self.sends = 0

    def order_send(self, request: Any) -> Any:
        self.sends += 1
        return super().order_send(request)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class Desk:
    """One test's world: a broker with one account, its gateway, its user, and a clock."""

    def __init__(self, settings: Settings, *, start_time: float | None = None) -> None:
        self.settings = settings
        self.user_id = f"u-{uuid.uuid4().hex[:8]}"
        self.broker = SimulatedBroker(5) if start_time is None else SimulatedBroker(5, start_time=start_time)
        self.login = 9000
        self.broker.add_account(self.login, "pw", currency="USD", balance=100_000.0)
        self.gateway = CountingGateway(SimulatedTerminal(self.broker, login=self.login, password="pw"))
        assert self.gateway.initialize(login=self.login, password="pw", server=self.broker.server)
        self.clock = Clock()

    def open(self, symbol: str = "EURUSD", volume: float = 0.5) -> int:
        return self.broker.manual_open(self.login, symbol, c.ORDER_TYPE_BUY, volume)

    def command(self, symbol: str, tickets: list[int], *, user_id: str | None = None,
                reason: CloseReason = CloseReason.DRAWDOWN_GUARD, attempt: int = 1) -> Envelope[ClosePosition]:
        who = user_id or self.user_id
        return observed(ClosePosition(user_id=who, symbol=symbol, tickets=tuple(tickets), reason=reason,
                                      rule=f"{reason.value}/close", attempt=attempt),
                        account_id=who, occurred_at=self.clock())


@pytest.fixture
async def desk(settings: Settings) -> Desk:
    desk = Desk(settings)
    assert settings.database_url is not None
    await insert_users(settings.database_url, [desk.user_id])
    return desk


@contextlib.asynccontextmanager
async def running_executor(desk: Desk, producer: AIOKafkaProducer,
                           config: ExecutorConfig | None = None) -> AsyncIterator[Executor]:
    """An executor process: its own consumer in the executor's group, the ledger in Postgres."""
    settings = desk.settings
    assert settings.database_url is not None and settings.kafka_bootstrap_servers is not None
    engine = make_engine(settings.database_url)
    consumer = make_consumer(CLOSE_COMMANDS.name(settings.topic_prefix),
                             bootstrap_servers=settings.kafka_bootstrap_servers, group_id=f"executor-{desk.user_id}")
    await consumer.start()
    executor = Executor(gateways={desk.user_id: desk.gateway}, ledger=Ledger(engine), producer=producer,
                        prefix=settings.topic_prefix, config=config or ExecutorConfig(), clock=desk.clock)
    stop = asyncio.Event()
    task = asyncio.create_task(executor.run(consumer, stop=stop))
    try:
        yield executor
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        await consumer.stop()
        await engine.dispose()


async def send(desk: Desk, producer: AIOKafkaProducer, command: Envelope[Any], times: int = 1) -> None:
    for _ in range(times):
        await publish(producer, CLOSE_COMMANDS, desk.settings.topic_prefix, command)


async def results_of(desk: Desk, count: int) -> list[Envelope[Any]]:
    async with LogReader(desk.settings, CLOSE_RESULTS) as log:
        await log.wait_for(lambda es: len([e for e in es if e.account_id == desk.user_id]) >= count,
                           what=f"{count} close results of {desk.user_id}")
        await log.read()
        return log.of(desk.user_id)


async def test_the_same_command_three_times_sends_one_order(desk: Desk, producer: AIOKafkaProducer) -> None:
    ticket = desk.open()
    command = desk.command("EURUSD", [ticket])
    async with running_executor(desk, producer):
        await send(desk, producer, command, times=3)
        results = await results_of(desk, 3)
    assert desk.gateway.sends == 1
    assert {r.event_id for r in results} == {results[0].event_id}, "each redelivery republishes the same result"
    assert [r.event_type for r in results] == ["PositionClosed"] * 3, "answered from the ledger, not re-executed"
    closed = results[0].payload
    assert (closed.event_type, closed.ticket, closed.retcode) == ("PositionClosed", ticket, c.TRADE_RETCODE_DONE)
    assert closed.pnl is not None and closed.pnl_gbp is not None and closed.price is not None
    assert desk.gateway.positions_get() == ()


async def test_a_ticket_closed_by_hand_is_superseded_not_traded(desk: Desk, producer: AIOKafkaProducer) -> None:
    ticket = desk.open()
    desk.broker.manual_close(desk.login, ticket)
    async with running_executor(desk, producer):
        await send(desk, producer, desk.command("EURUSD", [ticket]))
        (result,) = await results_of(desk, 1)
    assert desk.gateway.sends == 0
    assert (result.event_type, result.payload.retcode, result.payload.closed_by) == (
        "PositionCloseSuperseded", None, "manual")


async def test_one_market_guard_command_per_account_symbol_and_reason_per_30s(desk: Desk,
                                                                              producer: AIOKafkaProducer) -> None:
    first, second, gbp = desk.open(), desk.open(volume=0.2), desk.open("GBPUSD")
    spread = CloseReason.SPREAD
    async with running_executor(desk, producer):
        await send(desk, producer, desk.command("EURUSD", [first, second], reason=spread))
        await results_of(desk, 2)
        desk.clock.now += timedelta(seconds=29.9)
        late = desk.open()
        await send(desk, producer, desk.command("EURUSD", [late], reason=spread))
        await send(desk, producer, desk.command("GBPUSD", [gbp], reason=spread))  # another symbol: its own window
        await results_of(desk, 4)
        desk.clock.now += timedelta(seconds=0.1)
        await send(desk, producer, desk.command("EURUSD", [late], reason=spread))
        results = await results_of(desk, 5)
    outcomes = [(r.payload.ticket, r.event_type) for r in results]
    assert outcomes == [(first, "PositionClosed"), (second, "PositionClosed"), (late, "PositionCloseFailed"),
                        (gbp, "PositionClosed"), (late, "PositionClosed")]
    assert results[2].payload.error_message.startswith("rate limited")
    assert desk.gateway.sends == 4, "one command closed both EURUSD tickets; the refused one sent nothing"


async def test_market_and_drawdown_guards_closing_one_position_make_one_close_and_no_failure(
        desk: Desk, producer: AIOKafkaProducer) -> None:
    ticket = desk.open("XAUUSD", volume=0.1)
    gap = desk.command("XAUUSD", [ticket], reason=CloseReason.MARKET_GAP)
    desk.clock.now += timedelta(seconds=0.1)
    liquidation = desk.command("XAUUSD", [ticket], reason=CloseReason.DRAWDOWN_GUARD)
    async with running_executor(desk, producer):
        await send(desk, producer, gap)
        await send(desk, producer, liquidation)
        closed, superseded = await results_of(desk, 2)
    assert desk.gateway.sends == 1, "one close"
    assert (closed.event_type, closed.payload.command_id) == ("PositionClosed", gap.event_id)
    assert (superseded.event_type, superseded.payload.command_id) == ("PositionCloseSuperseded", liquidation.event_id)
    assert (superseded.payload.closed_by, superseded.payload.superseded_by_command) == (
        "close_command", gap.event_id.hex[:16]), "names the command that closed it"


async def test_a_liquidation_is_never_rate_limited_by_another_reason(desk: Desk, producer: AIOKafkaProducer) -> None:
    first = desk.open()
    async with running_executor(desk, producer):
        await send(desk, producer, desk.command("EURUSD", [first], reason=CloseReason.SPREAD))
        await results_of(desk, 1)
        desk.clock.now += timedelta(seconds=1)
        late = desk.open()
        await send(desk, producer, desk.command("EURUSD", [late], reason=CloseReason.DAILY_LOSS_GUARD))
        await send(desk, producer, desk.command("EURUSD", [first, late], reason=CloseReason.SPREAD, attempt=2))
        results = await results_of(desk, 4)
    assert [(r.payload.ticket, r.event_type) for r in results] == [
        (first, "PositionClosed"), (late, "PositionClosed"), (first, "PositionCloseSuperseded"),
        (late, "PositionCloseSuperseded")], "the liquidation and the retry were executed, not refused"
    assert desk.gateway.sends == 2


async def test_market_closed_is_deferred_to_the_next_open_then_closed(settings: Settings,
                                                                       producer: AIOKafkaProducer) -> None:
    # XAUUSD's daily break is 17:00-18:00 New York (22:00 UTC in January): the broker starts 5 s before it.
    desk = Desk(settings, start_time=1_704_700_800 + 14 * 3600 - 5)
    assert settings.database_url is not None
    await insert_users(settings.database_url, [desk.user_id])
    ticket = desk.open("XAUUSD", volume=0.1)
    desk.broker.advance(10)
    reopens = desk.clock.now + timedelta(hours=1)
    asked: list[tuple[str, datetime]] = []

    def next_open(symbol: str, at: datetime) -> datetime:
        asked.append((symbol, at))
        return reopens

    async with running_executor(desk, producer, ExecutorConfig(next_open=next_open)):
        await send(desk, producer, desk.command("XAUUSD", [ticket]))
        (deferred,) = await results_of(desk, 1)
        desk.broker.advance(3600)
        desk.clock.now = reopens
        await send(desk, producer, desk.command("XAUUSD", [ticket], attempt=2))
        _, closed = await results_of(desk, 2)
    assert (deferred.event_type, deferred.payload.retcode, deferred.payload.retry_at) == (
        "PositionCloseDeferred", c.TRADE_RETCODE_MARKET_CLOSED, reopens)
    assert asked == [("XAUUSD", deferred.occurred_at)], "the plugged-in calendar said when"
    assert closed.event_type == "PositionClosed"


async def test_a_crash_before_order_send_is_settled_by_closing_once(desk: Desk, producer: AIOKafkaProducer) -> None:
    ticket = desk.open()
    command = desk.command("EURUSD", [ticket])
    await claim_as_a_crashed_executor(desk, command, ticket)
    await send(desk, producer, command)  # never committed by the crashed executor: delivered again
    async with running_executor(desk, producer):
        results = await results_of(desk, 2)
    assert desk.gateway.sends == 1
    assert [r.event_type for r in results] == ["PositionClosed", "PositionClosed"]
    assert results[0].event_id == results[1].event_id


async def test_a_crash_after_order_send_is_settled_from_the_deals(desk: Desk, producer: AIOKafkaProducer) -> None:
    ticket = desk.open()
    command = desk.command("EURUSD", [ticket])
    await claim_as_a_crashed_executor(desk, command, ticket)
    position = desk.gateway.positions_get(ticket=ticket)[0]
    symbol = desk.gateway.symbol_info("EURUSD")
    settings = ExecutorConfig().close
    sent = desk.gateway.order_send(close_request(position, desk.gateway.symbol_info_tick("EURUSD"),
                                                 filling=filling_mode(symbol.filling_mode), settings=settings,
                                                 comment=close_comment(command.event_id)))
    assert sent.retcode == c.TRADE_RETCODE_DONE  # ... and the executor died before writing it down
    await send(desk, producer, command)
    async with running_executor(desk, producer):
        results = await results_of(desk, 2)
    assert desk.gateway.sends == 1, "settled by reading the deals, not by sending again"
    assert results[0].event_type == "PositionClosed" and results[0].payload.price == sent.price


async def claim_as_a_crashed_executor(desk: Desk, command: Envelope[ClosePosition], ticket: int) -> None:
    assert desk.settings.database_url is not None
    engine = make_engine(desk.settings.database_url)
    try:
        assert await Ledger(engine).claim(command_id=command.event_id, ticket=ticket, user_id=desk.user_id,
                                          symbol=command.payload.symbol, at=desk.clock(),
                                          command=command.model_dump(mode="json"))
    finally:
        await engine.dispose()


@pytest.mark.parametrize(("value", "reason"), [
    pytest.param(b"{not json", "malformed JSON", id="malformed bytes"),
    pytest.param(None, "no terminal for account", id="an account this executor does not serve"),
])
async def test_bad_commands_are_dead_lettered(desk: Desk, producer: AIOKafkaProducer, value: bytes | None,
                                              reason: str) -> None:
    ticket = desk.open()
    async with running_executor(desk, producer):
        if value is None:
            stranger = desk.command("EURUSD", [ticket], user_id=f"nobody-{desk.user_id}")
            await send(desk, producer, stranger)
        else:
            await producer.send_and_wait(CLOSE_COMMANDS.name(desk.settings.topic_prefix), value,
                                         key=desk.user_id.encode())
        async with LogReader(desk.settings, DEAD_LETTERS) as log:
            letters = await log.wait_for(lambda es: any(reason in e.payload.reason and desk.user_id in (
                e.payload.key or "") for e in es), what="a dead letter")
    assert desk.gateway.sends == 0
    assert any(reason in e.payload.reason for e in letters)
