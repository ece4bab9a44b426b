"""The close executor's loop: one command at a time per account, results published, then offsets.

Per ticket: the ledger row is claimed (``sending``, committed) before ``order_send`` and finished
after it; the result is published; the offset is committed after the results of every command
before it are on the log. A redelivered command finds its rows and republishes the stored results.

A ticket another command (or a stop, a hand, a stop-out) already closed is answered
PositionCloseSuperseded, naming what closed it: never a failure. "Market closed" (10018) is answered
PositionCloseDeferred with the time to try again: the market's next open from ``ExecutorConfig.next_open``
(the services plug in ``market_calendar``, the session calendar of ``infra.sessions``), or
``MARKET_CLOSED_RETRY`` (a minute) later when it knows none; the guard's alert tracker orders the retry.

Rate limit: a second *first* command (attempt 1) for the same account, symbol and market-guard
reason within the window (30 s) is not executed; each of its tickets gets a PositionCloseFailed
(retcode None, error "rate limited: ...") and a ledger row, so the refusal is on the record and a
redelivery of it is refused the same way. A liquidation (drawdown or daily loss), a retry, and a
command for a different reason are never rate limited: they are executed, and whatever another
command already closed is superseded. The window is measured from the ledger's rows, so it also
holds across a restart.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from sqlalchemy.exc import IntegrityError

from infra import sessions
from infra.kafka import dead_letter, publish_many, send_dead_letter
from infra.metrics import dead_letters_total, positions_autoclosed_total
from producers.executor.client import close_ticket, ensure_attached, gbp_rate, resolve_unknown
from producers.executor.ledger import RATE_LIMITED, Ledger, LedgerRow
from producers.executor.parsing import Attempted, CloseSettings, close_comment, outcome
from producers.mt5.gateway import Gateway
from producers.poller.client import ReadFailed, SymbolCache
from producers.ratelimit import within_window
from schemas import DecodeError, Envelope, decode, derived, utcnow
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from schemas.topics import CLOSE_COMMANDS, CLOSE_RESULTS

log = logging.getLogger(__name__)

CONSUMER = "executor"
T = TypeVar("T")
WallClock = Callable[[], datetime]
#: When the market of a symbol next opens after ``at`` (``at`` itself if it is open then; None if not
#: known): e.g. ``functools.partial(infra.sessions.next_open, settings)``.
NextOpen = Callable[[str, datetime], datetime | None]
#: The default wait after "market closed" when no session calendar is plugged in.
MARKET_CLOSED_RETRY = timedelta(seconds=60)
#: Reasons that are liquidations: never rate limited (the executor never drops one).
LIQUIDATIONS = frozenset({CloseReason.DRAWDOWN_GUARD, CloseReason.DAILY_LOSS_GUARD})


def no_calendar(symbol: str, at: datetime) -> datetime | None:
    """The default ``NextOpen``: no session calendar, so the next open is not known (retry a minute later)."""
    return None


def market_calendar(settings: object) -> NextOpen:
    """The production ``NextOpen``: the symbol's next session open in the configured calendar."""
    return functools.partial(sessions.next_open, settings)


@dataclass(frozen=True)
class ExecutorConfig:
    close: CloseSettings = field(default_factory=CloseSettings)
    window: timedelta = timedelta(seconds=30)  # at most one close command per account and symbol per window
    threads: int = 0  # 0: call terminals inline (the simulator); N: a pool of N threads
    sweep_interval: float = 10.0  # seconds between looks at unresolved ledger rows
    next_open: NextOpen = no_calendar  # after 10018; e.g. partial(infra.sessions.next_open, settings)


class Invalid(Exception):
    """A command that must not be executed: it goes to the dead-letter topic with this reason."""


class Executor:
    def __init__(self, *, gateways: Mapping[str, Gateway], ledger: Ledger, producer: AIOKafkaProducer,
                 prefix: str, config: ExecutorConfig = ExecutorConfig(), clock: WallClock = utcnow) -> None:
        self.gateways, self.ledger, self.producer, self.prefix = gateways, ledger, producer, prefix
        self.config, self.clock = config, clock
        self._caches: dict[str, SymbolCache] = {}
        self._pool = ThreadPoolExecutor(config.threads, "mt5-close") if config.threads else None

    # --- the consumer loop ----------------------------------------------------------------------------

    async def run(self, consumer: AIOKafkaConsumer, *, stop: asyncio.Event) -> None:
        await self.settle_unresolved()
        swept = time.monotonic()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=200)
            if batches:
                # Every partition's commands at once (an account's are all on one partition, in order):
                # one after another, a command waiting on a slow terminal held every other partition's.
                await self._handle_records([record for records in batches.values() for record in records])
                await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
            if time.monotonic() - swept > self.config.sweep_interval:
                await self.settle_unresolved()
                swept = time.monotonic()

    async def _handle_records(self, records: list[ConsumerRecord]) -> None:
        """Accounts in parallel, each account's commands in order."""
        by_account: dict[bytes | None, list[ConsumerRecord]] = {}
        for record in records:
            by_account.setdefault(record.key, []).append(record)
        await asyncio.gather(*(self._handle_in_order(rs) for rs in by_account.values()))

    async def _handle_in_order(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            await self.handle_record(record)

    async def handle_record(self, record: ConsumerRecord) -> None:
        try:
            envelope = decode(CLOSE_COMMANDS, record.value)
            self._check(envelope)
            await self.handle(envelope)
        except (DecodeError, Invalid) as error:
            await self._dead_letter(record, getattr(error, "reason", str(error)))

    def _check(self, envelope: Envelope[ClosePosition]) -> None:
        command = envelope.payload
        if envelope.account_id != command.user_id:
            raise Invalid(f"command keyed by account {envelope.account_id!r} names user {command.user_id!r}")
        if command.user_id not in self.gateways:
            raise Invalid(f"no terminal for account {command.user_id!r}")

    # --- one command ------------------------------------------------------------------------------------

    async def handle(self, envelope: Envelope[ClosePosition]) -> list[Envelope[Any]]:
        """Execute (or re-answer) one command; returns the results it published."""
        rows = {r.ticket: r for r in await self.ledger.rows_of(envelope.event_id)}
        if not rows and (refusal := await self._rate_limit(envelope)) is not None:
            return await self._publish([await self._refuse(envelope, t, refusal)
                                        for t in dict.fromkeys(envelope.payload.tickets)])
        results = []
        for ticket in dict.fromkeys(envelope.payload.tickets):  # a ticket listed twice is closed once
            row = rows.get(ticket)
            if row is None:
                results.append(await self._execute(envelope, ticket))
            elif row.status == "sending":
                results.append(await self._settle(row))
            else:
                results.append(_stored(row))
        return await self._publish([r for r in results if r is not None])

    async def _rate_limit(self, envelope: Envelope[ClosePosition]) -> str | None:
        command, now = envelope.payload, self.clock()
        if command.attempt > 1 or command.reason in LIQUIDATIONS:
            return None
        last = await self.ledger.last_close_at(user_id=command.user_id, symbol=command.symbol,
                                               other_than=envelope.event_id, reason=command.reason.value)
        if not within_window(last, now, self.config.window):
            return None
        assert last is not None
        return (f"rate limited: a close of {command.symbol} on {command.user_id} started "
                f"{(now - last).total_seconds():.1f} s ago; one close command per account and symbol per "
                f"{self.config.window.total_seconds():.0f} s; not executed")

    async def _refuse(self, envelope: Envelope[ClosePosition], ticket: int,
                      reason: str) -> Envelope[Any] | None:
        log.warning("close command %s ticket %d refused: %s", envelope.event_id, ticket, reason)
        if not await self._claim(envelope, ticket, status="failed", detail=RATE_LIMITED):
            return None
        return await self._finish(envelope, ticket, Attempted("failed", error=reason), status="failed")

    async def _execute(self, envelope: Envelope[ClosePosition], ticket: int) -> Envelope[Any] | None:
        if not await self._claim(envelope, ticket):
            rows = {r.ticket: r for r in await self.ledger.rows_of(envelope.event_id)}
            return _stored(rows[ticket]) if rows[ticket].status != "sending" else None
        command = envelope.payload
        attempted = await self._call(close_ticket, self.gateways[command.user_id], ticket=ticket,
                                     symbol=command.symbol, comment=close_comment(envelope.event_id),
                                     settings=self.config.close)
        return await self._finish(envelope, ticket, attempted)

    async def _claim(self, envelope: Envelope[ClosePosition], ticket: int, *, status: str = "sending",
                     detail: str | None = None) -> bool:
        command = envelope.payload
        try:
            return await self.ledger.claim(
                command_id=envelope.event_id, ticket=ticket, user_id=command.user_id, symbol=command.symbol,
                at=self.clock(), status=status, detail=detail, command=envelope.model_dump(mode="json"))
        except IntegrityError as error:  # the user is not in the users table
            raise Invalid(f"account {command.user_id!r} is not a known user: {error.orig}") from None

    async def _finish(self, envelope: Envelope[ClosePosition], ticket: int, attempted: Attempted,
                      status: str | None = None) -> Envelope[Any] | None:
        command = envelope.payload
        if attempted.status == "unknown":
            log.error("close of %d for command %s: outcome unknown (%s); left for the next sweep", ticket,
                      envelope.event_id, attempted.error)
            return None
        if attempted.status == "deferred":
            attempted = replace(attempted, retry_at=self._retry_at(command.symbol))
        rate = None if attempted.pnl is None else await self._call(
            gbp_rate, self.gateways[command.user_id], self._caches.setdefault(command.user_id, SymbolCache()))
        result = derived(outcome(command, envelope.event_id, ticket, attempted, rate), cause=envelope,
                         rule=f"close/{ticket}", occurred_at=self.clock())
        await self.ledger.finish(
            command_id=envelope.event_id, ticket=ticket, status=status or attempted.ledger_status,
            retcode=attempted.retcode, attempts=attempted.attempts, outcome=result.model_dump(mode="json"),
            at=self.clock())
        if attempted.status == "closed":
            positions_autoclosed_total.labels(reason=command.reason.value).inc()
        return result

    def _retry_at(self, symbol: str) -> datetime:
        """When to try a close refused with "market closed" again: the next open, or (when the calendar
        knows none, or thinks the market open although the terminal said closed) ``MARKET_CLOSED_RETRY``."""
        now = self.clock()
        opens = self.config.next_open(symbol, now)
        return opens if opens is not None and opens > now else now + MARKET_CLOSED_RETRY

    # --- unresolved rows (a crash, or a send nobody answered) -----------------------------------------------

    async def settle_unresolved(self) -> int:
        """Settle every ``sending`` row by looking at the terminal; publish what it finds (how many)."""
        found = [await self._settle(row) for row in await self.ledger.unresolved()]
        settled = [r for r in found if r is not None]
        await self._publish(settled)
        return len(settled)

    async def _settle(self, row: LedgerRow) -> Envelope[Any] | None:
        envelope = decode(CLOSE_COMMANDS, _json_bytes(row.result["command"]))
        gateway = self.gateways.get(row.user_id)
        if gateway is None:
            log.warning("unresolved close %s/%d: no terminal for %s here", row.command_id, row.ticket,
                        row.user_id)
            return None
        comment = close_comment(row.command_id)
        try:
            await self._call(ensure_attached, gateway)  # a restarted executor attaches terminals on first use
            found = await self._call(resolve_unknown, gateway, ticket=row.ticket, comment=comment,
                                     magic=self.config.close.magic, attempts=row.attempts)
        except ReadFailed as failed:
            log.warning("unresolved close %s/%d: cannot read the terminal yet (%s)", row.command_id,
                        row.ticket, failed)
            return None
        if found is None:  # still open, as before the send: the close never happened, so do it now
            log.info("unresolved close %s/%d: position still open; closing it", row.command_id, row.ticket)
            found = await self._call(close_ticket, gateway, ticket=row.ticket, symbol=row.symbol,
                                     comment=comment, settings=self.config.close)
        return await self._finish(envelope, row.ticket, found)

    # --- I/O helpers ----------------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._pool is None:
            return fn(*args, **kwargs)
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def _publish(self, results: list[Envelope[Any]]) -> list[Envelope[Any]]:
        await publish_many(self.producer, CLOSE_RESULTS, self.prefix, results)
        return results

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        log.warning("close command at %s/%d@%d dead-lettered: %s", record.topic, record.partition,
                    record.offset, reason)
        await send_dead_letter(self.producer, self.prefix, dead_letter(
            consumer=CONSUMER, topic=record.topic, partition=record.partition, offset=record.offset,
            key=record.key, value=record.value, reason=reason))
        dead_letters_total.labels(consumer=CONSUMER).inc()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _stored(row: LedgerRow) -> Envelope[Any] | None:
    """The result recorded for a finished row, exactly as first published."""
    stored = row.result.get("outcome")
    return None if stored is None else decode(CLOSE_RESULTS, _json_bytes(stored))


def _json_bytes(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()
