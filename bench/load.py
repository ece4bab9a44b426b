"""`make load` / `python -m bench load`: the whole pipeline, every service its own process, at N accounts.

The topology is the chaos harness's (``chaos/topology.py``) without its proxy and without faults:
tansu, a real PostgreSQL, and `reconguard simulator` (N load accounts plus the demo's four, all
polled at 1 Hz), `demo-platform`, `poller`, `worker` (``--workers N``: N worker processes in one
group, sharing the partitions), `executor`, `projector` (with the archiver), `api` and `telegram`
(to the tests' Bot API stand-in). A quarter into the run, a few load accounts
open a 2-lot EURUSD buy and the quote is stepped down 1.5 % over 30 s, so warnings, liquidations
and their closes happen under load (the demo's own accounts add their divergences).

Measured, every ``sample`` seconds and at the end:
- events/s per topic (growth of each topic's end offsets);
- consumer lag per group: messages behind (end − committed), and in seconds the age of the oldest
  record its group has not committed (broker timestamps); p99 and max over the samples. Lag by
  committed offsets includes each consumer's commit cadence (the worker commits every
  ``RECONGUARD_WORKER_COMMIT_INTERVAL_SECONDS``), so it is an upper bound of how late the group's
  processing is;
- guard reaction: a guard ClosePosition's ``recorded_at`` minus that of the critical report that
  caused it (``causation_id``), both read back from ``event_archive``, less the account's
  ``close_grace_seconds`` (the guard closes that long after the breach: the notice); warning-to-close
  notice: the first drawdown warning of an account to its first guard close. The reaction in three
  parts, from the times the close command carries (``details``): *judged*, the report's recording
  to the worker's judgement (``warning_at``: queueing, lag, the batch); *warned*, how much later
  than the judgement plus the grace the deadline was set (the notice runs from the warning's
  acknowledgement); *late*, the close's recording after its deadline (the sweep, the send);
- CPU (share of one core) and memory per process, as PSS (shared pages divided among their
  sharers, so PostgreSQL's shared buffers count once), and its slope (MiB per minute, least
  squares) over the whole window and over its second half (a leak still grows there);
- Postgres rows and bytes per hour per table, broker bytes per hour (keys and values published, as
  archived).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from chaos.topology import Topology
from infra.kafka import fetched_end_offsets, make_consumer
from infra.settings import DEFAULT_LEVELS
from schemas.topics import ALL_TOPICS

#: The pass bounds of the search (issue 15).
LAG_BOUND_S, REACTION_BOUND_MS = 2.0, 250.0
#: Every account here has the default levels: a critical breach is closed this long after it is seen.
GRACE_MS = DEFAULT_LEVELS.close_grace_seconds * 1000


class LoadTopology(Topology):
    """The chaos topology with clients straight on the broker (no proxy between)."""

    def __init__(self, directory: Path, *, accounts: int, telegram_url: str, workers: int = 1) -> None:
        super().__init__(directory, seed=0, accounts=accounts, telegram_url=telegram_url, restart_delay=lambda: 1.0)
        self.workers = workers
        self.proxy_port = self.broker_port  # settings() and environment() point at the broker itself
        self.simulator_port = free_port_range(accounts + 5)  # the control port, then one per account

    def start_servers(self) -> None:
        import signal
        import subprocess

        from infra.embedded import die_with_parent, tansu_binary

        url = f"tcp://127.0.0.1:{self.broker_port}"
        with (self.logs / "tansu.log").open("ab") as log:
            self.tansu = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))
        self.proxy.start()  # idle: stop() closes it
        self.postgres.start()

    def start_services(self) -> None:
        super().start_services()
        # As `reconguard run` does: reactions and broker bytes are read from the archive. Under the
        # orchestrator's lock: it watches every service it knows and took one not started yet for a
        # crash (and started a second archiver).
        with self._lock:
            self.start("archiver")
            for number in range(2, self.workers + 1):  # one group: the partitions are shared among them
                self.start(f"worker-{number}")

    def argv(self, name: str) -> list[str]:
        return super().argv("worker" if name.startswith("worker-") else name)

    def pids(self) -> dict[str, list[int]]:
        """Every process of the run by name (PostgreSQL: the postmaster and its backends)."""
        found = {name: [s.process.pid] for name, s in self.services.items() if s.alive() and s.process}
        if self.tansu is not None:
            found["tansu"] = [self.tansu.pid]
        found["postgres"] = self.postgres_pids()
        return found


def free_port_range(count: int, *, low: int = 10000, high: int = 32000) -> int:
    """A first port of ``count`` consecutive ports nobody listens on now (the simulator's accounts
    each listen on one, so a single free port is not enough at hundreds of accounts), below the
    ephemeral range, so outgoing connections made meanwhile cannot take one."""
    import random
    import socket

    for _ in range(200):
        first = random.randrange(low, high - count)
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


@dataclass
class Samples:
    """What the sampler saw, one entry per sample."""

    times: list[float] = field(default_factory=list)
    ends: list[dict[str, int]] = field(default_factory=list)  # topic -> sum of end offsets
    lag_seconds: dict[str, list[float]] = field(default_factory=dict)  # group -> worst topic's lag in seconds
    lag_messages: dict[str, list[int]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # process -> cumulative CPU seconds
    rss: dict[str, list[float]] = field(default_factory=dict)  # process -> MiB


Offsets = dict[TopicPartition, int]


async def _offsets(bootstrap: str, prefix: str) -> tuple[Offsets, dict[str, Offsets]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = {t.name(prefix) for t in ALL_TOPICS}
        described = await admin.describe_topics(list(names))
        partitions = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
        groups = [g[0] for g in await admin.list_consumer_groups() if g[0].startswith(prefix)]
        committed = {}
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group, partitions=partitions)  # tansu: named
            committed[group] = {tp: o.offset for tp, o in offsets.items() if tp.topic in names and o.offset >= 0}
    finally:
        await admin.close()
    return await fetched_end_offsets(bootstrap, partitions), committed


async def _oldest_unread(bootstrap: str, positions: dict[TopicPartition, int], *,
                         timeout: float = 2.0) -> dict[TopicPartition, float]:
    """The broker timestamp (s) of the record at each position: the oldest one its group has not committed."""
    if not positions:
        return {}
    consumer = make_consumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=10,
                             max_partition_fetch_bytes=4096)
    await consumer.start()
    found: dict[TopicPartition, float] = {}
    try:
        consumer.assign(list(positions))
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while len(found) < len(positions) and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=100)).items():
                if records and tp not in found:
                    found[tp] = records[0].timestamp / 1000
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    return found


def _sample(topology: LoadTopology, samples: Samples) -> None:
    settings = topology.settings
    assert settings.kafka_bootstrap_servers
    ends, committed = asyncio.run(_offsets(settings.kafka_bootstrap_servers, settings.topic_prefix))
    now = time.monotonic()
    per_topic: dict[str, int] = {}
    for tp, end in ends.items():
        per_topic[tp.topic] = per_topic.get(tp.topic, 0) + end
    samples.times.append(now)
    samples.ends.append(per_topic)
    for group, offsets in committed.items():
        behind: dict[str, int] = {}
        for tp, offset in offsets.items():
            behind[tp.topic] = behind.get(tp.topic, 0) + max(0, ends.get(tp, offset) - offset)
        unread = {tp: o for tp, o in offsets.items() if ends.get(tp, o) > o}
        oldest = asyncio.run(_oldest_unread(settings.kafka_bootstrap_servers, unread))
        seconds = max((time.time() - at for at in oldest.values()), default=0.0)
        name = group.removeprefix(settings.topic_prefix + ".")
        samples.lag_seconds.setdefault(name, []).append(seconds)
        samples.lag_messages.setdefault(name, []).append(sum(behind.values()))
    for name, pids in topology.pids().items():
        cpu, rss = 0.0, 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                times = process.cpu_times()
                cpu += times.user + times.system + times.children_user + times.children_system
                rss += _resident(process) / 2**20
        samples.cpu.setdefault(name, []).append(cpu)
        samples.rss.setdefault(name, []).append(rss)


def _resident(process: psutil.Process) -> int:
    """Proportional set size: each shared page counted once over the processes sharing it. RSS counted
    PostgreSQL's shared buffers again in every backend that touched them, so its sum (and slope) grew
    with the pages backends touched, not with memory used."""
    try:
        return int(process.memory_full_info().pss)
    except (AttributeError, psutil.AccessDenied):  # no PSS on this platform
        return int(process.memory_info().rss)


def _drive(topology: LoadTopology, *, accounts: int, steps: int = 30, step_percent: float = 0.05) -> None:
    """A few load accounts open a 2-lot EURUSD buy, then the quote falls 1.5 % over 30 s (as chaos does)."""
    from producers.demo.remote import RemoteBroker
    from producers.mt5 import constants as c
    from producers.mt5.simulator.server import load_login

    broker = RemoteBroker(f"127.0.0.1:{topology.simulator_port}")
    for index in range(accounts):
        with contextlib.suppress(Exception):
            broker.manual_open(load_login(index), "EURUSD", c.ORDER_TYPE_BUY, 2.0, comment="load drive")
    for _ in range(steps):
        time.sleep(1.0)
        with contextlib.suppress(Exception):
            tick = broker.tick("EURUSD")
            step = tick.bid * step_percent / 100
            broker.set_quote("EURUSD", round(tick.bid - step, 5), round(tick.ask - step, 5))


_REACTIONS = """
    WITH closes AS (
        SELECT convert_from(value, 'UTF8')::jsonb AS e FROM event_archive WHERE event_type = 'ClosePosition'),
    timed AS (
        SELECT cause.event_type AS cause, closes.e->'payload'->>'reason' AS reason,
               (closes.e->>'recorded_at')::timestamptz AS closed,
               (convert_from(cause.value, 'UTF8')::jsonb->>'recorded_at')::timestamptz AS reported,
               (closes.e->'payload'->'details'->>'warning_at')::timestamptz AS judged,
               (closes.e->'payload'->'details'->>'deadline')::timestamptz AS deadline,
               (closes.e->'payload'->'details'->>'close_grace_seconds')::float8 AS grace
        FROM closes JOIN event_archive cause ON cause.event_id = (closes.e->>'causation_id')::uuid)
    SELECT cause, reason, extract(epoch FROM closed - reported) * 1000 AS ms,
           extract(epoch FROM judged - reported) * 1000 AS judged_ms,
           (extract(epoch FROM deadline - judged) - grace) * 1000 AS warned_ms,
           extract(epoch FROM closed - deadline) * 1000 AS late_ms
    FROM timed"""
#: The parts of a guard close's reaction (see the module's docstring); they add up to it.
PARTS = ("judged", "warned", "late")
_NOTICES = r"""
    WITH events AS (SELECT event_type, convert_from(value, 'UTF8')::jsonb AS e FROM event_archive
                    WHERE event_type IN ('ClosePosition', 'GuardAlertRaised')),
    warned AS (SELECT e->>'account_id' AS account, min((e->>'recorded_at')::timestamptz) AS at FROM events
               WHERE event_type = 'GuardAlertRaised' AND e->'payload'->>'alert_type' = 'drawdown_warning' GROUP BY 1),
    closed AS (SELECT e->>'account_id' AS account, min((e->>'recorded_at')::timestamptz) AS at FROM events
               WHERE event_type = 'ClosePosition' AND e->'payload'->>'reason' LIKE '%\_guard' GROUP BY 1)
    SELECT extract(epoch FROM closed.at - warned.at) AS s FROM warned JOIN closed USING (account)
    WHERE closed.at >= warned.at"""
_TABLES = """
    SELECT c.relname AS name, CASE c.relkind WHEN 'p' THEN
           (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree(c.oid))
           ELSE pg_total_relation_size(c.oid) END AS bytes
    FROM pg_class c WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
    AND c.relnamespace = 'public'::regnamespace"""


async def _storage(url: str) -> dict[str, Any]:
    """Rows and bytes of every table, and the bytes published (keys and values, as archived)."""
    connection = await asyncpg.connect(url)
    try:
        tables = {}
        for row in await connection.fetch(_TABLES):
            rows = await connection.fetchval(f'SELECT count(*) FROM "{row["name"]}"')
            tables[row["name"]] = (int(rows), int(row["bytes"]))
        published = await connection.fetchval(
            "SELECT coalesce(sum(octet_length(value) + coalesce(octet_length(key), 0)), 0) FROM event_archive")
        return {"tables": tables, "broker_bytes": int(published)}
    finally:
        await connection.close()


async def _guard(url: str) -> dict[str, Any]:
    """Reaction of every close (by what caused it and why) and warning-to-close notices."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(_REACTIONS)
        reactions = [(r["cause"], r["reason"], float(r["ms"])) for r in rows]
        parts = {part: [float(r[f"{part}_ms"]) for r in rows if _guard_close(r["reason"]) and r[f"{part}_ms"] is not None]
                 for part in PARTS}
        return {"reactions": reactions, "parts": parts,
                "notices_s": [float(r["s"]) for r in await connection.fetch(_NOTICES)]}
    finally:
        await connection.close()


def _guard_close(reason: str | None) -> bool:
    return bool(reason) and reason.endswith("_guard")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _slope(ys: list[float], xs: list[float]) -> float:
    """Least-squares slope (per second)."""
    if len(ys) < 3:
        return float("nan")
    return statistics.linear_regression(xs, ys).slope


@dataclass
class Point:
    accounts: int
    seconds: float
    load_average: tuple[float, float, float]
    numbers: dict[str, Any]
    workers: int = 1

    @property
    def lag_p99_s(self) -> float:
        return max((v for k, v in self.numbers["lag_p99_s"].items()), default=float("nan"))

    @property
    def reaction_p99_ms(self) -> float:
        return self.numbers["reaction_p99_ms"]

    @property
    def polled(self) -> bool:
        """Whether the accounts were reported about at least every other second (the pipeline ran)."""
        return self.numbers["events_per_s"].get("account-reports", 0.0) >= 0.5 * self.accounts

    def holds(self) -> bool:
        """Polled, lag under 2 s and reaction p99 under 250 ms (a point with no close cannot hold)."""
        return self.polled and self.lag_p99_s < LAG_BOUND_S and self.reaction_p99_ms < REACTION_BOUND_MS


def run_point(accounts: int, *, seconds: float, workers: int = 1, sample: float = 5.0, warmup: float = 20.0,
              directory: Path | None = None, startup_timeout: float = 600.0) -> Point:
    """The whole pipeline at ``accounts`` for ``seconds``; every process stopped after.

    Measuring starts ``warmup`` seconds after every account was assessed by the guard at least once
    (the poller connects to thousands of terminals first: a fixed wait measured its start-up, not
    its rounds); ``startup_s`` is how long that took from the services' start.
    """
    from chaos.run import _fake_telegram

    directory = (directory or Path(".reconguard") / f"load-{accounts}").resolve()
    shutil.rmtree(directory, ignore_errors=True)
    with _fake_telegram(accounts) as telegram_url:
        topology = LoadTopology(directory, accounts=accounts, telegram_url=telegram_url, workers=workers)
        try:
            topology.start_servers()
            topology.prepare()
            topology.start_services()
            started_services = time.monotonic()
            _wait_until_assessed(topology, accounts, timeout=startup_timeout)
            startup_s = time.monotonic() - started_services
            time.sleep(warmup)
            before = asyncio.run(_storage(topology.postgres.url))
            samples = Samples()
            driver = threading.Thread(target=_run_drive, args=(topology, accounts, seconds), daemon=True)
            driver.start()
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                _sample(topology, samples)
                time.sleep(max(0.0, sample - (time.monotonic() - samples.times[-1])))
            _sample(topology, samples)
            load_average = os.getloadavg()
            driver.join(timeout=5)
            after = asyncio.run(_storage(topology.postgres.url))
            guard = asyncio.run(_guard(topology.postgres.url))
            dead = [name for name, s in topology.services.items() if s.crashed]
        finally:
            topology.stop()
    numbers = summarise(samples, before, after, guard)
    numbers["services_crashed"] = dead
    numbers["startup_s"] = startup_s
    return Point(accounts, seconds, load_average, numbers, workers)


def _wait_until_assessed(topology: LoadTopology, accounts: int, *, timeout: float) -> None:
    """Until every load account (and the demo's four) has a position snapshot: polled, judged, projected."""
    deadline = time.monotonic() + timeout
    while (seen := topology.assessed_accounts()) < accounts + 4:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {seen} of {accounts + 4} accounts assessed after {timeout:g} s")
        time.sleep(2.0)


def _run_drive(topology: LoadTopology, accounts: int, seconds: float) -> None:
    time.sleep(min(seconds / 4, 5.0))  # early enough for short runs to see the closes
    _drive(topology, accounts=max(2, min(20, accounts // 100)))


def summarise(samples: Samples, before: dict[str, Any], after: dict[str, Any], guard: dict[str, Any]) -> dict[str, Any]:
    elapsed = samples.times[-1] - samples.times[0]
    hours = elapsed / 3600
    first, last = samples.ends[0], samples.ends[-1]
    minutes = [(t - samples.times[0]) / 60 for t in samples.times]
    grown = {t: (rows - before["tables"].get(t, (0, 0))[0], size - before["tables"].get(t, (0, 0))[1])
             for t, (rows, size) in after["tables"].items()}
    guard_closes = [ms for cause, reason, ms in guard["reactions"] if _guard_close(reason)]
    causes: dict[str, int] = {}
    for cause, reason, _ in guard["reactions"]:
        causes[f"{reason} after {cause}"] = causes.get(f"{reason} after {cause}", 0) + 1
    return {
        "seconds_measured": elapsed,
        "events_per_s": {t.rsplit(".", 2)[-2]: (last[t] - first.get(t, 0)) / elapsed for t in sorted(last)},
        "lag_p99_s": {g: _percentile(v, 99) for g, v in samples.lag_seconds.items()},
        "lag_max_s": {g: max(v) for g, v in samples.lag_seconds.items()},
        "lag_max_messages": {g: max(v) for g, v in samples.lag_messages.items()},
        "closes": causes,
        "report_to_close_p50_ms": _percentile(guard_closes, 50),
        # The guard closes ``close_grace_seconds`` after the critical report (the notice); reaction is past that.
        "reaction_p50_ms": _percentile([ms - GRACE_MS for ms in guard_closes], 50),
        "reaction_p99_ms": _percentile([ms - GRACE_MS for ms in guard_closes], 99),
        # Where it went: to the judgement, to the warning's acknowledgement, past the deadline.
        "reaction_parts_p50_ms": {part: _percentile(values, 50) for part, values in guard.get("parts", {}).items()},
        "reaction_parts_p99_ms": {part: _percentile(values, 99) for part, values in guard.get("parts", {}).items()},
        "warning_to_close_p50_s": _percentile(guard["notices_s"], 50),
        "cpu_share": {p: (v[-1] - v[0]) / elapsed for p, v in samples.cpu.items() if len(v) > 1},
        "rss_mib": {p: v[-1] for p, v in samples.rss.items()},
        "rss_slope_mib_per_min": {p: _slope(v, minutes[-len(v):]) for p, v in samples.rss.items()},
        # Over the second half only: start-up growth (caches, pools, buffers) has flattened by then,
        # a leak has not.
        "rss_slope_late_mib_per_min": {p: _slope(v[len(v) // 2:], minutes[-len(v):][len(v) // 2:])
                                       for p, v in samples.rss.items()},
        "table_rows_per_hour": {t: rows / hours for t, (rows, _) in grown.items() if rows > 0},
        "table_bytes_per_hour": {t: size / hours for t, (rows, size) in grown.items() if rows > 0},
        "broker_bytes_per_hour": (after["broker_bytes"] - before["broker_bytes"]) / hours,
    }


def print_point(point: Point) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    workers = f", {point.workers} workers" if point.workers > 1 else ""
    console.rule(f"{point.accounts} accounts{workers}, {point.seconds:g} s, load average {point.load_average[0]:.2f}")
    table = Table("measure", "value")
    for key, value in point.numbers.items():
        table.add_row(key, _shown(value))
    console.print(table)
    console.print(f"holds lag < {LAG_BOUND_S:g} s and reaction p99 < {REACTION_BOUND_MS:g} ms: {point.holds()}")


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def search(counts: list[int], *, seconds: float, workers: int = 1, keep_going: bool = False) -> list[Point]:
    """Run each count in order, stopping at the first that does not hold the bounds (or that could
    not run at all), unless ``keep_going``."""
    points = []
    for accounts in counts:
        try:
            point = run_point(accounts, seconds=seconds, workers=workers)
        except Exception as error:  # noqa: BLE001 - a count the machine cannot start is a result too
            print(f"{accounts} accounts: the run failed ({error!r}); stopping here")
            break
        print_point(point)
        points.append(point)
        if not point.holds() and not keep_going:
            break
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench load", description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[200, 500, 1000, 2000, 3000],
                        help="account counts to try, in order (stops at the first that breaks the bounds)")
    parser.add_argument("--seconds", type=float, default=600.0, help="measured seconds per count")
    parser.add_argument("--json", type=Path, help="also write every point's numbers here")
    parser.add_argument("--workers", type=int, default=1,
                        help="streams worker processes, in one group sharing the partitions (scale-out)")
    parser.add_argument("--keep-going", action="store_true", help="run every count, even past the first that fails")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md and its plot")
    options = parser.parse_args(argv)
    points = search(options.accounts, seconds=options.seconds, workers=options.workers, keep_going=options.keep_going)
    if points and not options.no_docs:
        from bench import loadreport

        command = "python -m bench load " + " ".join(argv if argv is not None else sys.argv[2:])
        print(f"wrote {loadreport.write(points, command=command.strip())}")
    if options.json:
        options.json.write_text(json.dumps([point.__dict__ for point in points], indent=2, default=str))
    if not points:
        return 1
    held = [p.accounts for p in points if p.holds()]
    print(f"largest N holding the bounds: {max(held) if held else 'none of those tried'}")
    return 0
