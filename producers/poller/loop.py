"""The poller's loop: read every account on an interval, publish the reports in batches.

One task does every poll (the interval's rounds and manual syncs alike), so an account's reports
are appended in poll order. Terminal calls run inline when they are cheap and in-process (the
simulator) or in a thread pool when they block (a real terminal, an RPyC bridge).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner, murmur2
from pydantic import ValidationError

from infra.brokerclock import BrokerClock, server_clock_at
from infra.metrics import (
    mt5_last_sync_timestamp_seconds,
    mt5_poller_last_round_timestamp_seconds,
    mt5_position_sync_total,
    mt5_positions_total,
)
from infra.settings.markets import MarketSettings
from producers.accounts import AccountRef
from producers.mt5 import constants as c
from producers.mt5.gateway import Gateway
from producers.poller.client import (
    IPC_FAILURES,
    AccountRead,
    Quotes,
    ReadFailed,
    SentRead,
    SymbolCache,
    finish_read,
    read_account,
    send_read,
)
from producers.poller.parsing import PollState, conclude_poll, latest_tick_msc, sync_failed
from producers.ratelimit import KeyedRateLimiter, MonotonicClock
from schemas import Envelope, encode_all, encode_key, observed, utcnow
from schemas.topics import ACCOUNT_REPORTS, POSITION_REPORTS, TICKS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollerConfig:
    interval: float = 1.0
    sync_window: float = 10.0  # at most one manual sync per account per this many seconds
    threads: int = 0  # 0: call terminals inline (the simulator); N: a pool of N threads
    reattach_every: float = 10.0  # seconds between initialize() calls on a terminal that stopped answering
    parts: int = 4  # a round is read, concluded and published in this many parts (see Poller.poll)


@dataclass
class PolledAccount:
    ref: AccountRef
    terminal: Gateway
    seq: int
    state: PollState = field(default_factory=PollState)
    cache: SymbolCache = field(default_factory=SymbolCache)
    reattached_at: float = float("-inf")
    clock: BrokerClock = field(default_factory=BrokerClock)
    positions_gauge: Any = field(init=False, repr=False)
    synced_gauge: Any = field(init=False, repr=False)
    positions_shown: int | None = field(default=None, init=False, repr=False)  # what positions_gauge says

    def __post_init__(self) -> None:
        # Labelled once: a labels() lookup per account and poll was a visible share of a round.
        self.positions_gauge = mt5_positions_total.labels(account=self.ref.user_id)
        self.synced_gauge = mt5_last_sync_timestamp_seconds.labels(account=self.ref.user_id)


@dataclass
class Batch:
    """The envelopes of one round, by topic."""

    accounts: list[Envelope[Any]] = field(default_factory=list)
    positions: list[Envelope[Any]] = field(default_factory=list)
    ticks: list[Envelope[Any]] = field(default_factory=list)
    failed: int = 0

    def merge(self, other: Batch) -> None:
        self.accounts += other.accounts
        self.positions += other.positions
        self.ticks += other.ticks
        self.failed += other.failed


class RememberedKeyPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, modulo the partitions) with each key's hash
    remembered: the poller sends every account's key a few times a second, and pure-Python murmur2
    was a tenth of its CPU. Same partition for the same key as the default, so consumers see no change."""

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return DefaultPartitioner()(key, all_partitions, available)
        hashed = self._hashes.get(key)
        if hashed is None:
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


async def publish_in_batches(producer: AIOKafkaProducer, topic: str, envelopes: Sequence[Envelope[Any]],
                             partitioner: RememberedKeyPartitioner) -> None:
    """As ``publish_many`` (sent, then every one acknowledged), but packed into one record batch per
    partition (as many as their size needs) instead of one ``send`` each: a round of thousands of
    reports spent more CPU in the producer's per-message bookkeeping than in making the reports.
    Partitions are the default partitioner's, so an account's messages land where ``send`` put them."""
    if not envelopes:
        return
    partitions = sorted(await producer.partitions_for(topic))
    builders: dict[int, Any] = {}
    sent = []
    for envelope, value in zip(envelopes, encode_all(envelopes), strict=True):
        key = encode_key(envelope.account_id)
        partition = partitioner(key, partitions, partitions)
        builder = builders.get(partition)
        if builder is None or builder.append(key=key, value=value, timestamp=None) is None:
            if builder is not None:  # full: off it goes, and a new one for this partition
                sent.append(await producer.send_batch(builder, topic, partition=partition))
            builder = builders[partition] = producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None) is None:  # larger than a batch
                sent.append(await producer.send(topic, value, key=key, partition=partition))
                del builders[partition]
    for partition, builder in builders.items():
        sent.append(await producer.send_batch(builder, topic, partition=partition))
    await asyncio.gather(*sent)


def first_poll_seq() -> int:
    """Poll sequence numbers start at the wall-clock millisecond, so they keep rising across restarts."""
    return time.time_ns() // 1_000_000


class Poller:
    def __init__(self, *, accounts: Iterable[tuple[AccountRef, Gateway]], producer: AIOKafkaProducer,
                 prefix: str, config: PollerConfig = PollerConfig(), clock: MonotonicClock = time.monotonic,
                 first_seq: int | None = None, markets: MarketSettings | None = None) -> None:
        seq = first_poll_seq() if first_seq is None else first_seq
        markets = markets or MarketSettings()
        self.accounts = {ref.user_id: PolledAccount(ref, terminal, seq, clock=BrokerClock(
            markets.clock_rule(ref.user_id, str(ref.login)), markets.server_clock_assumed))
            for ref, terminal in accounts}
        self.producer, self.prefix, self.config = producer, prefix, config
        self.sync_limiter = KeyedRateLimiter(config.sync_window, clock)
        self._requested: dict[str, list[asyncio.Future[None]]] = {}
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(config.threads, "mt5-read") if config.threads else None
        self._partitioner = RememberedKeyPartitioner()

    # --- manual syncs ---------------------------------------------------------------------------------

    def request_sync(self, user_id: str) -> asyncio.Future[None] | None:
        """A future done once the account's next poll is published; None if refused (rate limit)."""
        if user_id not in self.accounts:
            raise KeyError(user_id)
        if not self.sync_limiter.allow(user_id):
            log.info("manual sync of %s refused: %.1f s left of its %.0f s window", user_id,
                     self.sync_limiter.retry_after(user_id), self.config.sync_window)
            return None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._requested.setdefault(user_id, []).append(done)
        self._wake.set()
        return done

    # --- polling --------------------------------------------------------------------------------------

    async def run(self, *, stop: asyncio.Event) -> None:
        """Poll every account each interval, and requested accounts at once, until ``stop``."""
        next_round = time.monotonic()
        while not stop.is_set():
            delay = next_round - time.monotonic()
            if delay > 0 and not self._requested:
                await _first_of(stop, self._wake, timeout=delay)
            if stop.is_set():
                break
            if time.monotonic() >= next_round:
                next_round = max(next_round + self.config.interval, time.monotonic() - self.config.interval)
                await self.poll()
            elif self._requested:
                await self.poll(list(self._requested))

    async def poll(self, user_ids: Iterable[str] | None = None) -> Batch:
        """Poll these accounts (default: all) once and publish their reports; returns what was sent.

        A round is concluded and published a part (a ``config.parts``-th of its accounts) at a time,
        as its reads come in: published at the end of the round, a report waited for every later
        account's read and conclusion (hundreds of milliseconds at 1,000 accounts, all of it in the
        guard's reaction), and the worker got the whole round at once. A part is a share of the round,
        not a number of accounts: a report waits for its part's later reads, a share of the round's,
        and each part is a publish here and a batch for every consumer, so their number a second
        stays what it is at 1,000 accounts (parts of 250) as the accounts grow. Every part is
        acknowledged before the round ends, so an account's next report still follows this one."""
        self._wake.clear()
        polled = [self.accounts[u] for u in (self.accounts if user_ids is None else user_ids)]
        waiting = {a.ref.user_id: self._requested.pop(a.ref.user_id, []) for a in polled}
        observed_at = utcnow()
        batch = Batch()
        tick_reports: dict[tuple[Any, ...], Any] = {}  # accounts sharing a quote share its report
        sending: list[asyncio.Future[None]] = []
        try:
            async with contextlib.aclosing(self._read_in_parts(polled)) as parts:
                async for part, reads in parts:
                    concluded = Batch()
                    for account, read in zip(part, reads, strict=True):
                        self._conclude(account, read, observed_at, concluded, tick_reports)
                    sending.append(asyncio.ensure_future(self._publish(concluded)))
                    batch.merge(concluded)
                    await asyncio.sleep(0)  # the send starts now: the next part's reads may be in already
            await asyncio.gather(*sending)
        finally:
            for future in sending:  # a failed read or send: the others do not outlive the round
                if not future.done():
                    future.cancel()
        mt5_poller_last_round_timestamp_seconds.set_to_current_time()
        for futures in waiting.values():
            for done in futures:
                if not done.done():
                    done.set_result(None)
        return batch

    async def _read_in_parts(self, polled: list[PolledAccount]
                             ) -> AsyncIterator[tuple[list[PolledAccount], list[AccountRead | ReadFailed]]]:
        """The round's reads, a part at a time and in order, each part as soon as its reads are in."""
        quotes: Quotes = {}  # this round's quotes, shared by the terminals of one trade server
        every, step = self.config.reattach_every, max(1, -(-len(polled) // max(1, self.config.parts)))
        if self._pool is None:
            for start in range(0, len(polled), step):
                part = polled[start:start + step]
                yield part, [_read(a, every, quotes) for a in part]
            return
        # Warm reads through a connected bridge go out together from one thread (a request in flight to
        # every terminal, answers taken in turn, handed over a part at a time); the others (a first read
        # is a call at a time, a reconnect may wait for a timeout) one per thread, as do the mending of
        # broken pipes.
        loop = asyncio.get_running_loop()
        together = [_sendable(a) for a in polled]
        reads: list[asyncio.Future[AccountRead | ReadFailed]] = [
            loop.create_future() if warm else loop.run_in_executor(self._pool, _read, account, every, quotes)
            for account, warm in zip(polled, together, strict=True)]
        warm_reads = [read for read, warm in zip(reads, together, strict=True) if warm]
        if warm_reads:
            hand_over = functools.partial(_hand_over, loop, warm_reads, step)
            job = loop.run_in_executor(self._pool, _read_together, [a for a, t in zip(polled, together, strict=True)
                                                                    if t], quotes, hand_over)
            job.add_done_callback(functools.partial(_fail_waiting, warm_reads))
        for start in range(0, len(polled), step):
            part = polled[start:start + step]
            got = [await read for read in reads[start:start + step]]
            mends = {i: loop.run_in_executor(self._pool, _mended, a, every, quotes, r)
                     for i, (a, t, r) in enumerate(zip(part, together[start:start + step], got, strict=True))
                     if t and _broken_pipe(r)}
            for i, mend in mends.items():  # in the pool at once; a task for every read cost a round 1,000 tasks
                got[i] = await mend
            yield part, got

    def _conclude(self, account: PolledAccount, read: AccountRead | ReadFailed, observed_at: datetime,
                  batch: Batch, tick_reports: dict[tuple[Any, ...], Any]) -> None:
        ref, seq = account.ref, account.seq
        account.seq += 1
        if isinstance(read, ReadFailed):
            batch.failed += 1
            payload = sync_failed(user_id=ref.user_id, login=ref.login, poll_seq=seq, stage=read.stage,
                                  error_code=read.code, error_message=read.message)
            batch.accounts.append(observed(payload, account_id=ref.user_id, occurred_at=observed_at))
            return
        account.clock.observe(latest_tick_msc(read.ticks.values()), observed_at)
        offset = account.clock.offset_minutes(observed_at)
        try:
            outcome = conclude_poll(read, account.state, user_id=ref.user_id, poll_seq=seq, offset=offset,
                                    server_now=server_clock_at(observed_at, offset), tick_reports=tick_reports)
        except ValidationError as error:  # an absurd value from the terminal: unknown, not reported as fact
            read = ReadFailed("parse", c.RES_E_FAIL, f"terminal data failed validation: {error}")
            account.seq -= 1
            return self._conclude(account, read, observed_at, batch, tick_reports)
        account.state = outcome.state
        batch.accounts.append(observed(outcome.account, account_id=ref.user_id, occurred_at=observed_at))
        batch.positions.append(observed(outcome.positions, account_id=ref.user_id, occurred_at=observed_at))
        batch.ticks.extend(observed(t, account_id=ref.user_id, occurred_at=observed_at)
                           for t in outcome.ticks)
        if (held := len(outcome.positions.positions)) != account.positions_shown:  # a gauge's set takes a lock
            account.positions_gauge.set(held)
            account.positions_shown = held
        account.synced_gauge.set(observed_at.timestamp())

    async def _publish(self, batch: Batch) -> None:
        # Position reports before account reports: a consumer that sees a poll's account report
        # can rely on its position list being on the log already.
        for topic, envelopes in ((POSITION_REPORTS, batch.positions), (ACCOUNT_REPORTS, batch.accounts),
                                 (TICKS, batch.ticks)):
            await publish_in_batches(self.producer, topic.name(self.prefix), envelopes, self._partitioner)
        mt5_position_sync_total.labels(outcome="ok").inc(len(batch.accounts) - batch.failed)
        mt5_position_sync_total.labels(outcome="failed").inc(batch.failed)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _read(account: PolledAccount, reattach_every: float, quotes: Quotes) -> AccountRead | ReadFailed:
    """One account's read; every failure, including a broken bridge raising, becomes ReadFailed."""
    return _mended(account, reattach_every, quotes, _read_once(account, quotes))


def _mended(account: PolledAccount, reattach_every: float, quotes: Quotes,
            read: AccountRead | ReadFailed) -> AccountRead | ReadFailed:
    """``read``; but a broken pipe is mended with initialize() (now and then) and, once mended, read again."""
    if _broken_pipe(read) and _reattach(account, reattach_every):
        return _read_once(account, quotes)
    return read


def _broken_pipe(read: AccountRead | ReadFailed) -> bool:
    return isinstance(read, ReadFailed) and read.code in IPC_FAILURES


def _sendable(account: PolledAccount) -> bool:
    """Whether the account's read can be sent without waiting: a warm read through a connected bridge."""
    return bool(getattr(account.terminal, "connected", False)) and account.cache.server is not None


def _read_together(accounts: list[PolledAccount], quotes: Quotes,
                   hand_over: Callable[[list[AccountRead | ReadFailed]], None]) -> list[AccountRead | ReadFailed]:
    """Every account's request sent first, then each one's answers taken and read in turn; the reads
    so far are handed over now and then (``hand_over``, from this thread)."""
    sent = [_send(a, quotes) for a in accounts]
    reads: list[AccountRead | ReadFailed] = []
    for account, request in zip(accounts, sent, strict=True):
        reads.append(_read_once(account, quotes, request))
        hand_over(reads)
    return reads


def _hand_over(loop: asyncio.AbstractEventLoop, futures: list[asyncio.Future[Any]], step: int,
               reads: list[AccountRead | ReadFailed]) -> None:
    """From the reading thread: every ``step`` reads (and the last), set the loop's futures of those reads."""
    done = len(reads)
    if done % step == 0 or done == len(futures):
        start = (done - 1) // step * step
        loop.call_soon_threadsafe(_set_results, futures[start:done], reads[start:done])


def _set_results(futures: list[asyncio.Future[Any]], results: list[Any]) -> None:
    for future, result in zip(futures, results, strict=True):
        if not future.done():
            future.set_result(result)


def _fail_waiting(futures: list[asyncio.Future[Any]], job: asyncio.Future[Any]) -> None:
    """The reading thread raised (or the round was given up): nothing waits for its reads for ever."""
    error = None if job.cancelled() else job.exception()
    if error is None and not job.cancelled():
        return
    for future in futures:
        if not future.done():
            future.set_exception(error or asyncio.CancelledError())


def _send(account: PolledAccount, quotes: Quotes) -> SentRead | None:
    try:
        return send_read(account.terminal, cache=account.cache, flows_since=account.state.flows_since,
                         server_now=_server_now(account), quotes=quotes)
    except Exception:  # noqa: BLE001 - read call by call instead, where the failure is reported
        return None


def _server_now(account: PolledAccount) -> int:
    now = utcnow()
    return int(server_clock_at(now, account.clock.offset_minutes(now)).timestamp())


def _read_once(account: PolledAccount, quotes: Quotes, sent: SentRead | None = None) -> AccountRead | ReadFailed:
    try:
        if sent is not None:
            return finish_read(account.terminal, sent, login=account.ref.login, cache=account.cache,
                               previous=account.state.volumes, pending=account.state.waiting, quotes=quotes)
        return read_account(account.terminal, login=account.ref.login, cache=account.cache,
                            previous=account.state.volumes, pending=account.state.waiting,
                            flows_since=account.state.flows_since, server_now=_server_now(account), quotes=quotes)
    except ReadFailed as failed:
        return failed
    except Exception as error:  # noqa: BLE001 - an RPyC or IPC error is a failed read, not a crash
        return ReadFailed("terminal", c.RES_E_FAIL, f"{type(error).__name__}: {error}")


def _reattach(account: PolledAccount, every: float) -> bool:
    """A restarted terminal needs initialize() again; try it now and then. True if it worked."""
    now = time.monotonic()
    if now - account.reattached_at < every:
        return False
    account.reattached_at = now
    try:
        attached = bool(account.terminal.initialize())
    except Exception as error:  # noqa: BLE001 - a bridge that raises is retried at the next interval
        log.warning("re-attaching the terminal of %s raised %s", account.ref.user_id, error)
        return False
    log.info("re-attaching the terminal of %s: %s", account.ref.user_id,
             "done" if attached else account.terminal.last_error())
    return attached


async def _first_of(*events: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
