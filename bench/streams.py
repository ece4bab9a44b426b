"""The streams worker beside a plain one-table Faust agent, and the guard's reaction time.

(a) Throughput. A realistic mix for ``ACCOUNTS`` accounts (approved trades, then ``ROUNDS`` polls
of an account report, a position report and a quote per held symbol) is published to fresh input
topics, and the same bytes, keyed the same, to one topic of its own for the baseline: a plain
Faust agent (``async for key, value in stream.items(): table[key] = json.loads(value)``) on a stock
``faust.App``, configured only as tansu needs (a short session timeout, its heartbeat under it, offsets
from the earliest; aiokafka's producer is not idempotent by default) -- the issue's baseline. Beside
it, for reference, the same agent on the worker's tuned app settings and transport
(``streams.app.tuned_app``). Each runs alone in a child process, twice, alternating, each run its own
consumer group, under the same Faust worker (``streams.worker.faust_worker``: no terminal spinner,
whose DEBUG root logger would tax every app); the best run of each is compared (the machine is
shared). The clock starts at the first event a run receives (so group join and table recovery
are excluded) and stops when it has processed every published input event (the streams worker:
when the batch that completes them has been processed, its outputs and changelog records (and
those of every earlier batch) acknowledged by the broker, and its inputs acked).

(b) Guard reaction. 500 accounts hold positions and report equity at 1 Hz, paced, to the real
worker (``python -m streams``) with their grace set to 0 in ``users``. Some accounts fall through
their critical level for two readings (the confirmation rule: the second reading decides). The
latency runs from the deciding report to its ClosePosition (matched by ``causation_id``), measured
two ways: as a reader consuming both topics saw them arrive, and by the records' own timestamps
(the producers' create times).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import queue
import random
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from infra.db import migrate
from infra.dburl import plain_url
from infra.embedded import infrastructure
from infra.kafka import ensure_topics, make_consumer, make_producer
from infra.settings import Settings
from schemas import Envelope, encode, observed, utcnow
from schemas.common import Direction
from schemas.platform import TradeApproved
from schemas.reports import AccountReport, ObservedPosition, PositionReport, TickReport
from schemas.topics import ACCOUNT_REPORTS, CLOSE_COMMANDS, EXPECTED_TRADES, POSITION_REPORTS, TICKS, Topic

ACCOUNTS = 1000
ROUNDS = 20
TIMED_RUNS = 2
BASELINE = Topic("baseline-reports", 1, (), "The plain agent's input: the same bytes as the worker's inputs.",
                 written_by="bench")
INPUTS = (EXPECTED_TRADES, ACCOUNT_REPORTS, POSITION_REPORTS, TICKS)
SYMBOLS = {"EURUSD": (1.085, 0.00001), "GBPUSD": (1.27, 0.00001), "USDJPY": (151.2, 0.001), "XAUUSD": (2350.0, 0.01)}

LATENCY_ACCOUNTS = 500
LATENCY_SECONDS = 40
BREACHES_PER_SECOND = 5
BREACH_FROM_SECOND = 3

Record = tuple[str, bytes, bytes]  # topic, key, value


# ------------------------------------------------------------------------------------ the events

def _trade_and_position(account: str, index: int, at: datetime, rng: random.Random
                        ) -> tuple[Envelope[TradeApproved], ObservedPosition]:
    symbol = list(SYMBOLS)[index % len(SYMBOLS)]
    price, point = SYMBOLS[symbol]
    direction = Direction.BUY if rng.random() < 0.5 else Direction.SELL
    sign = 1 if direction is Direction.BUY else -1
    ticket, volume = 10_000_000 + index, rng.choice((0.1, 0.2, 0.5, 1.0))
    signal = f"sig-{account}-{index}"
    by_ticket = index % 2 == 0  # half bound by the platform's ticket, half by the order comment
    trade = TradeApproved(signal_id=signal, approval_id=f"apr-{account}-{index}", user_id=account, symbol=symbol,
                          direction=direction, volume=volume, entry_price=price, stop_loss=price * (1 - sign * 0.01),
                          take_profit=price * (1 + sign * 0.02), mt5_position_id=ticket if by_ticket else None)
    position = ObservedPosition(ticket=ticket, symbol=symbol, direction=direction, volume=volume, price_open=price,
                                price_current=price, sl=trade.stop_loss, tp=trade.take_profit, profit=0.0,
                                profit_gbp=0.0, comment="" if by_ticket else signal[:29], opened_at=at)
    return observed(trade, account_id=account, occurred_at=at - timedelta(seconds=1)), position


def workload(accounts: int, rounds: int, *, seed: int = 2026) -> dict[str, list[tuple[bytes, bytes]]]:
    """Encoded (key, value) pairs per input topic, on a clock starting now (readings must be fresh)."""
    rng = random.Random(seed)
    start = utcnow()
    out: dict[str, list[tuple[bytes, bytes]]] = {t.base: [] for t in INPUTS}
    for a in range(accounts):
        account, key = f"bench-{a:05d}", f"bench-{a:05d}".encode()
        held = [_trade_and_position(account, a * 3 + j, start, rng) for j in range(1 + a % 3)]
        out[EXPECTED_TRADES.base] += [(key, encode(trade)) for trade, _ in held]
        equity, positions = 10_000.0, [p for _, p in held]
        for r in range(rounds):
            at = start + timedelta(seconds=r, milliseconds=a % 1000)
            equity *= 1 + rng.gauss(0, 0.004)
            positions = [_moved(p, rng) for p in positions]
            out[ACCOUNT_REPORTS.base].append((key, encode(_account_report(account, equity, r, at))))
            out[POSITION_REPORTS.base].append((key, encode(observed(
                PositionReport(user_id=account, login=50_000 + a, poll_seq=r, positions=tuple(positions)),
                account_id=account, occurred_at=at))))
            out[TICKS.base] += [(key, encode(_tick(account, p, at, rng))) for p in positions]
    return out


def _moved(p: ObservedPosition, rng: random.Random) -> ObservedPosition:
    price = p.price_current * (1 + rng.gauss(0, 0.0005))
    sign = 1 if p.direction is Direction.BUY else -1
    profit = round(sign * (price - p.price_open) / p.price_open * p.volume * 100_000, 2)
    return p.model_copy(update={"price_current": price, "profit": profit, "profit_gbp": profit})


def _account_report(account: str, equity: float, seq: int, at: datetime) -> Envelope[AccountReport]:
    report = AccountReport(user_id=account, login=50_000 + int(account[-5:]), server="Bench-Server", currency="GBP",
                           poll_seq=seq, balance=10_000.0, equity=equity, profit=equity - 10_000.0, margin=250.0,
                           margin_free=equity - 250.0, margin_level=equity / 250.0 * 100, gbp_rate=1.0,
                           server_time=at)
    return observed(report, account_id=account, occurred_at=at)


def _tick(account: str, p: ObservedPosition, at: datetime, rng: random.Random) -> Envelope[TickReport]:
    point = SYMBOLS[p.symbol][1]
    spread = rng.randint(8, 30) * point
    tick = TickReport(symbol=p.symbol, bid=p.price_current, ask=p.price_current + spread, point=point,
                      quoted_at=at - timedelta(milliseconds=200))
    return observed(tick, account_id=account, occurred_at=at)


async def publish_raw(bootstrap: str, records: list[Record]) -> None:
    producer = make_producer(bootstrap, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for i in range(0, len(records), 5000):
            futures = [await producer.send(topic, value, key=key) for topic, key, value in records[i:i + 5000]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


# ------------------------------------------------------------------------- counted child workers

class _Clock:
    """Counts processed input events in a worker and reports the rate once all have been processed;
    ``progress`` (shared with the parent) shows how far it got meanwhile."""

    def __init__(self, total: int, results: Any, progress: Any) -> None:
        self.total, self.results, self.progress = total, results, progress
        self.count, self.first = 0, None

    def started(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def add(self, n: int) -> None:
        self.count += n
        self.progress.value = self.count
        if self.count >= self.total and self.results is not None:
            seconds = time.perf_counter() - self.first
            self.results.put({"events": self.count, "seconds": seconds})
            self.results = None


def _run_faust(app: Any) -> None:
    """Run a worker as ``python -m streams`` does (no terminal spinner), for every app measured."""
    from streams.worker import faust_worker

    sys.argv = sys.argv[:1] + ["worker"]  # mode's Worker reads the command line
    faust_worker(app, loglevel="WARNING").execute_from_commandline()


def count_streams_worker(settings: Settings, total: int, results: Any, progress: Any, name: str) -> None:
    """Child process: the real streams app (its own consumer group ``name``), its batches counted."""
    from streams.app import create_app

    app = create_app(settings, name=name)
    runtime = app.streams_runtime
    inputs = {t.name(settings.topic_prefix) for t in INPUTS}
    apply, clock = runtime.apply, _Clock(total, results, progress)

    async def started(runs: Any) -> list[Any]:
        clock.started()
        return await apply(runs)

    runtime.apply = started  # counted once the batch's sends are acknowledged and its inputs acked:
    runtime.on_settled = lambda runs: clock.add(sum(len(run.records) for run in runs if run.tp.topic in inputs))
    _run_faust(app)


def stock_app(name: str, settings: Settings) -> Any:
    """A stock ``faust.App``: only what tansu requires, nothing tuned for speed."""
    import faust

    session = settings.worker.session_timeout_seconds
    return faust.App(
        name, broker=[f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")],
        broker_session_timeout=session, broker_heartbeat_interval=session / 3,  # tansu: a short session
        consumer_auto_offset_reset="earliest",  # the input was published before the group joins
        topic_partitions=settings.topic_partitions,  # the table co-partitioned with its input topic
        web_enabled=False, datadir=str(settings.data_dir / "faust"))  # no port, no files in the checkout


def count_plain_agent(settings: Settings, total: int, results: Any, progress: Any, name: str) -> None:
    """Child process: the issue's baseline, one agent writing one table per event, on a stock app."""
    _count_agent(stock_app(name, settings), settings, total, results, progress)


def count_tuned_agent(settings: Settings, total: int, results: Any, progress: Any, name: str) -> None:
    """Child process: the same agent on the worker's tuned app settings and transport (for reference)."""
    from streams.app import tuned_app

    _count_agent(tuned_app(name, settings), settings, total, results, progress)


def _count_agent(app: Any, settings: Settings, total: int, results: Any, progress: Any) -> None:
    topic = app.topic(BASELINE.name(settings.topic_prefix), key_serializer="raw", value_serializer="raw")
    latest = app.Table("latest", partitions=settings.topic_partitions)
    clock = _Clock(total, results, progress)

    @app.agent(topic, name="keep_latest")
    async def keep_latest(stream: Any) -> None:
        async for key, value in stream.items():
            clock.started()
            latest[key.decode()] = json.loads(value)
            clock.add(1)

    _run_faust(app)


def run_counted(target: Any, settings: Settings, total: int, name: str, *, stalled_after: float = 90.0,
                at_most: float = 1800.0) -> dict[str, float]:
    """Run ``target`` in a child process until it has counted ``total`` events.

    A slow machine is not a failure: the child is given as long as its count keeps moving (up to
    ``at_most``); it fails, saying how far it got, once the count has not moved for
    ``stalled_after`` seconds (start-up and group join included) or the child has died."""
    context = multiprocessing.get_context("spawn")
    results, progress = context.Queue(), context.Value("q", 0, lock=False)
    child = context.Process(target=target, args=(settings, total, results, progress, name), daemon=True)
    child.start()
    started = moved = time.monotonic()
    last = 0
    try:
        while True:
            try:
                measured = results.get(timeout=5.0)
                break
            except queue.Empty:
                pass
            now, count = time.monotonic(), progress.value
            if count != last:
                last, moved = count, now
            if not child.is_alive():
                raise RuntimeError(f"{name}: the counting child exited ({child.exitcode}) after {count:,} of "
                                   f"{total:,} events")
            if now - moved > stalled_after or now - started > at_most:
                raise TimeoutError(f"{name}: {count:,} of {total:,} events counted in {now - started:.0f} s, "
                                   f"none in the last {now - moved:.0f} s")
    finally:
        child.terminate()
        child.join(20)
        if child.is_alive():
            child.kill()
            child.join(5)
    return {"events": float(measured["events"]), "seconds": measured["seconds"],
            "per_s": measured["events"] / measured["seconds"]}


async def _prepare_throughput(settings: Settings) -> int:
    prefix = settings.topic_prefix
    await ensure_topics(settings.kafka_bootstrap_servers, prefix, partitions=settings.topic_partitions)
    await ensure_topics(settings.kafka_bootstrap_servers, prefix, partitions=settings.topic_partitions,
                        topics=(BASELINE,))
    encoded = workload(ACCOUNTS, ROUNDS)
    # The worker refuses the platform's trades for users it does not know: the accounts are users
    # (with the table's default levels, as before they were users).
    await _add_users(settings.database_url, [f"bench-{a:05d}" for a in range(ACCOUNTS)])
    ordered = [(t.name(prefix), k, v) for t in INPUTS for k, v in encoded[t.base]]
    await publish_raw(settings.kafka_bootstrap_servers, ordered)
    await publish_raw(settings.kafka_bootstrap_servers, [(BASELINE.name(prefix), k, v) for _, k, v in ordered])
    return len(ordered)


def measure_throughput(settings: Settings) -> dict[str, float]:
    """Alternating runs (each its own consumer group over the same input); the best of each counts,
    as the machine is shared and a run can lose the CPU to someone else's work."""
    total = asyncio.run(_prepare_throughput(settings))
    worker, plain, tuned = [], [], []
    for attempt in range(TIMED_RUNS):
        prefix = settings.topic_prefix
        worker.append(run_counted(count_streams_worker, settings, total, f"{prefix}-w{attempt}"))
        plain.append(run_counted(count_plain_agent, settings, total, f"{prefix}-p{attempt}"))
        tuned.append(run_counted(count_tuned_agent, settings, total, f"{prefix}-t{attempt}"))
    best_worker, best_plain = max(r["per_s"] for r in worker), max(r["per_s"] for r in plain)
    best_tuned = max(r["per_s"] for r in tuned)
    return {"events": float(total), "streams_per_s": best_worker, "plain_agent_per_s": best_plain,
            "tuned_agent_per_s": best_tuned,
            "streams_per_s_runs_min": min(r["per_s"] for r in worker),
            "plain_agent_per_s_runs_min": min(r["per_s"] for r in plain),
            "tuned_agent_per_s_runs_min": min(r["per_s"] for r in tuned),
            "ratio_to_plain_agent": best_worker / best_plain,  # the baseline (target >= 5)
            "ratio_to_tuned_agent": best_worker / best_tuned}


# ---------------------------------------------------------------------------- guard reaction time

class _Arrivals:
    """Reads account reports and close commands as they are appended; notes when each arrived."""

    def __init__(self, settings: Settings) -> None:
        prefix = settings.topic_prefix
        self.reports, self.commands = ACCOUNT_REPORTS.name(prefix), CLOSE_COMMANDS.name(prefix)
        self.consumer = make_consumer(self.reports, self.commands, bootstrap_servers=settings.kafka_bootstrap_servers,
                                      group_id=None, fetch_max_wait_ms=10)
        self.report_at: dict[str, tuple[float, int]] = {}  # event id -> (arrival, record timestamp ms)
        self.close_at: dict[str, tuple[float, int]] = {}  # causing event id -> first close command
        self.accounts_seen: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batches = await self.consumer.getmany(timeout_ms=50)
            arrived = time.perf_counter()
            for tp, records in batches.items():
                for record in records:
                    self._note(tp.topic, record, arrived)

    def _note(self, topic: str, record: Any, arrived: float) -> None:
        message = json.loads(record.value)
        if topic == self.reports:
            self.report_at[message["event_id"]] = (arrived, record.timestamp)
            self.accounts_seen.add(message["account_id"])
        else:
            self.close_at.setdefault(message["causation_id"], (arrived, record.timestamp))


async def _add_accounts(database_url: str, accounts: list[str]) -> None:
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        await connection.executemany(
            "INSERT INTO users (id, display_name, close_grace_seconds) VALUES ($1, $1, 0) ON CONFLICT (id) DO "
            "UPDATE SET close_grace_seconds = 0", [(a,) for a in accounts])
    finally:
        await connection.close()


async def _add_users(database_url: str, accounts: list[str]) -> None:
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        await connection.executemany("INSERT INTO users (id, display_name) VALUES ($1, $1) ON CONFLICT (id) DO NOTHING",
                                     [(a,) for a in accounts])
    finally:
        await connection.close()


def _held(account: str, a: int, at: datetime) -> Envelope[PositionReport]:
    positions = tuple(ObservedPosition(
        ticket=90_000_000 + a * 4 + j, symbol=symbol, direction=Direction.BUY, volume=0.1, price_open=price,
        price_current=price, sl=None, tp=None, profit=-60.0, profit_gbp=-60.0, opened_at=at)
        for j, (symbol, (price, _)) in enumerate(list(SYMBOLS.items())[: 1 + a % 2]))
    return observed(PositionReport(user_id=account, login=60_000 + a, poll_seq=0, positions=positions),
                    account_id=account, occurred_at=at)


async def _paced_reports(producer: Any, settings: Settings, accounts: list[str]) -> dict[str, str]:
    """1 Hz per account, spread evenly over each second; returns account -> its deciding report's id."""
    topic = ACCOUNT_REPORTS.name(settings.topic_prefix)
    rng = random.Random(4)
    breach_at = {accounts[i]: BREACH_FROM_SECOND + i // BREACHES_PER_SECOND
                 for i in range(min(len(accounts), (LATENCY_SECONDS - BREACH_FROM_SECOND - 2) * BREACHES_PER_SECOND))}
    deciding: dict[str, str] = {}
    interval = 1.0 / len(accounts)
    started = time.perf_counter()
    for second in range(1, LATENCY_SECONDS + 1):
        for i, account in enumerate(accounts):
            due = started + second - 1 + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            falling = breach_at.get(account) in (second, second - 1)
            equity = 8_800.0 if falling else 10_000.0 * (1 + rng.uniform(-0.002, 0.002))
            report = _account_report(account, equity, second, utcnow())
            if falling and breach_at[account] == second - 1:
                deciding[account] = str(report.event_id)  # the second reading beyond the level decides
            await producer.send(topic, encode(report), key=account.encode())
    await producer.flush()
    return deciding


async def _wait_for(condition: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def measure_reaction(settings: Settings) -> dict[str, float]:
    from streams.worker import serve

    prefix = settings.topic_prefix
    await ensure_topics(settings.kafka_bootstrap_servers, prefix, partitions=settings.topic_partitions)
    accounts = [f"guard-{a:04d}" for a in range(LATENCY_ACCOUNTS)]
    await _add_accounts(settings.database_url, accounts)
    arrivals, stop_reading, stop_worker = _Arrivals(settings), asyncio.Event(), asyncio.Event()
    await arrivals.consumer.start()
    reading = asyncio.create_task(arrivals.run(stop_reading))
    worker = asyncio.create_task(serve(settings, stop=stop_worker))
    producer = make_producer(settings.kafka_bootstrap_servers, linger_ms=1)
    await producer.start()
    try:
        now = utcnow()
        for a, account in enumerate(accounts):  # positions held, and a first reading (the peak)
            await producer.send(POSITION_REPORTS.name(prefix), encode(_held(account, a, now)), key=account.encode())
            await producer.send(ACCOUNT_REPORTS.name(prefix), encode(_account_report(account, 10_000.0, 0, now)),
                                key=account.encode())
        await producer.flush()
        await _wait_for(lambda: len(arrivals.accounts_seen) == len(accounts), timeout=30, what="the first readings")
        await _wait_for_worker(settings, accounts, worker)
        deciding = await _paced_reports(producer, settings, accounts)
        await _wait_for(lambda: all(d in arrivals.close_at for d in deciding.values()), timeout=10,
                        what="every breach's close command")
    finally:
        await producer.stop()
        stop_worker.set()
        await asyncio.gather(worker, return_exceptions=True)
        stop_reading.set()
        await reading
        await arrivals.consumer.stop()
    seen = [(arrivals.report_at[d], arrivals.close_at[d]) for d in deciding.values()]
    by_arrival = [(close[0] - report[0]) * 1000 for report, close in seen]
    by_timestamp = [float(close[1] - report[1]) for report, close in seen]
    return {"breaches": float(len(seen)), "reaction_p50_ms": _percentile(by_arrival, 50),
            "reaction_p99_ms": _percentile(by_arrival, 99), "reaction_max_ms": max(by_arrival),
            "reaction_by_record_time_p50_ms": _percentile(by_timestamp, 50),
            "reaction_by_record_time_p99_ms": _percentile(by_timestamp, 99),
            "reaction_mean_ms": statistics.fmean(by_arrival)}


async def _wait_for_worker(settings: Settings, accounts: list[str], worker: asyncio.Task[None]) -> None:
    """The worker is working once it has assessed every account's first reading."""
    from schemas.topics import ACCOUNT_STATE

    consumer = make_consumer(ACCOUNT_STATE.name(settings.topic_prefix),
                             bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    await consumer.start()
    assessed: set[str] = set()
    deadline = time.monotonic() + 90
    try:
        while len(assessed) < len(accounts):
            if worker.done():
                worker.result()
                raise RuntimeError("the streams worker stopped")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker assessed {len(assessed)} of {len(accounts)} accounts in 90 s")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                assessed.update(r.key.decode() for r in records)
    finally:
        await consumer.stop()


# ---------------------------------------------------------------------------------------- main

def main() -> dict[str, float]:
    data_dir = Path(".reconguard") / "bench-streams"
    run = uuid.uuid4().hex[:6]
    with infrastructure(kafka_bootstrap_servers=None, database_url=None, data_dir=data_dir, fresh=True) as ep:
        base = Settings(KAFKA_BOOTSTRAP_SERVERS=ep.kafka_bootstrap_servers, DATABASE_URL=ep.database_url,
                        data_dir=data_dir, topic_prefix=f"bench-streams-{run}", topic_partitions=4,
                        log_level="WARNING")
        migrate(base.database_url)
        numbers = measure_throughput(base)
        latency = base.model_copy(update={"topic_prefix": f"bench-guard-{run}"})
        numbers |= asyncio.run(measure_reaction(latency))
    return numbers


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(main())
