"""How long a killed streams worker takes to decide again (issue 12).

The worker is started as the chaos harness and an orchestrator start it (``reconguard worker``, its
own process), fed a history that leaves ``ACCOUNTS`` accounts' state in its tables, with a changelog
of about ``CHANGELOG_RECORDS`` records (the history runs with the volatile state flushed every
batch, so the changelog grows as a long run's does), then killed with SIGKILL. A new worker is
spawned and, at the same moment, a report of an account it has never seen is published; the clock
stops when that report's assessment (an ``AccountAssessed`` caused by it) is read back: spawn,
imports, start-up, group join, table recovery and the first batch. The worker's log gives the
split: when the process began logging, when recovery started and when it finished.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

from aiokafka import TopicPartition

from bench.streams import INPUTS, _account_report, _add_users, publish_raw, workload
from infra.db import migrate
from infra.embedded import infrastructure
from infra.kafka import ensure_topics, fetched_end_offsets, make_consumer
from infra.settings import Settings, environment
from schemas import encode, utcnow
from schemas.topics import ACCOUNT_REPORTS, ACCOUNT_STATE

ACCOUNTS = 200
ROUNDS = 40
RESTARTS = 3
ROUND_PAUSE = 0.3  # seconds between two rounds of the history
TABLES = ("reconciliation", "drawdown", "market", "alerts")
#: Log lines that mark the steps of a start, and the name each is reported under (seconds after spawn).
MILESTONES = {"faust_starting_s": r"Worker\]: Starting", "restore_started_s": r"Restoring state from changelog",
              "restore_done_s": r"Done reading from changelog", "ready_s": r"Worker ready"}


def _spawn(settings: Settings, log_path: Path, **env: str) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "reconguard.cli", "worker"], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                env=os.environ | environment(settings) | {"PYTHONUNBUFFERED": "1"} | env)


def _kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def _changelogs(settings: Settings) -> list[TopicPartition]:
    app = f"{settings.topic_prefix}-streams"
    return [TopicPartition(f"{app}-{table}-changelog", p) for table in TABLES for p in range(settings.topic_partitions)]


async def _changelog_records(settings: Settings) -> int:
    ends = await fetched_end_offsets(settings.kafka_bootstrap_servers, _changelogs(settings))
    return sum(ends.values())


async def _processed(settings: Settings, *, timeout: float = 900.0) -> int:
    """Once the worker has committed every input record: the changelog's size."""
    inputs = [TopicPartition(t.name(settings.topic_prefix), p) for t in INPUTS
              for p in range(settings.topic_partitions)]
    ends = await fetched_end_offsets(settings.kafka_bootstrap_servers, inputs)
    consumer = make_consumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=f"{settings.topic_prefix}-streams")
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            committed = {tp: await consumer.committed(tp) or 0 for tp in inputs}
            if all(committed[tp] >= ends[tp] for tp in inputs):
                return await _changelog_records(settings)
            await asyncio.sleep(1.0)
    finally:
        await consumer.stop()
    raise TimeoutError(f"the worker had not processed the history after {timeout:.0f} s")


async def _assessed(settings: Settings, cause: str, *, timeout: float = 120.0) -> float:
    """When (perf_counter) the assessment caused by event ``cause`` is read back."""
    consumer = make_consumer(ACCOUNT_STATE.name(settings.topic_prefix),
                             bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, fetch_max_wait_ms=20)
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                if any(json.loads(r.value)["causation_id"] == cause for r in records):
                    return time.perf_counter()
    finally:
        await consumer.stop()
    raise TimeoutError(f"no assessment of the probe within {timeout:.0f} s")


def _milestones(log_path: Path, offset: int, spawned_at: float) -> dict[str, float]:
    """Seconds after the spawn at which the log shows each milestone (log times are wall clock)."""
    found: dict[str, float] = {}
    text = log_path.read_bytes()[offset:].decode(errors="replace")
    for line in text.splitlines():
        stamp = re.search(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[,.]\d+", line)
        if stamp is None:
            continue
        at = datetime.fromisoformat(stamp.group(0).replace(",", ".")).timestamp()
        for name, pattern in MILESTONES.items():
            if name not in found and re.search(pattern, line):
                found[name] = round(at - spawned_at, 2)
    return found


async def _restart(settings: Settings, log_path: Path, probe: int) -> dict[str, float]:
    account = f"probe{probe:05d}"
    await _add_users(settings.database_url, [account])
    report = _account_report(account, 10_000.0, 0, utcnow())
    offset = log_path.stat().st_size if log_path.exists() else 0
    spawned_wall, spawned = time.time(), time.perf_counter()
    worker = _spawn(settings, log_path)
    try:
        await publish_raw(settings.kafka_bootstrap_servers,
                          [(ACCOUNT_REPORTS.name(settings.topic_prefix), account.encode(), encode(report))])
        decided = await _assessed(settings, str(report.event_id))
        numbers = {"spawn_to_decision_s": round(decided - spawned, 2)}
        numbers |= _milestones(log_path, offset, spawned_wall)
    finally:
        _kill(worker)
    return numbers


async def _history(settings: Settings) -> None:
    """``ROUNDS`` polls of every account, a round at a time (each its own batches, as in a live run)."""
    encoded = workload(ACCOUNTS, ROUNDS)
    await _add_users(settings.database_url, [f"bench-{a:05d}" for a in range(ACCOUNTS)])
    by_round: list[list[tuple[str, bytes, bytes]]] = [[] for _ in range(ROUNDS)]
    for topic in INPUTS:
        records = encoded[topic.base]
        per_key: dict[bytes, list[bytes]] = {}
        for key, value in records:
            per_key.setdefault(key, []).append(value)
        for key, values in per_key.items():
            for i, value in enumerate(values):  # an account's events spread evenly over the rounds
                by_round[i * ROUNDS // len(values)].append((topic.name(settings.topic_prefix), key, value))
    for records in by_round:
        await publish_raw(settings.kafka_bootstrap_servers, records)
        await asyncio.sleep(ROUND_PAUSE)


def main() -> dict[str, float]:
    data_dir = Path(".reconguard") / "bench-restart"
    with infrastructure(kafka_bootstrap_servers=None, database_url=None, data_dir=data_dir, fresh=True) as ep:
        settings = Settings(KAFKA_BOOTSTRAP_SERVERS=ep.kafka_bootstrap_servers, DATABASE_URL=ep.database_url,
                            data_dir=data_dir, topic_prefix=f"bench-restart-{uuid.uuid4().hex[:6]}",
                            topic_partitions=4, log_level="INFO")
        migrate(settings.database_url)
        log_path = data_dir / "logs" / f"{settings.topic_prefix}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, settings.topic_prefix,
                                  partitions=settings.topic_partitions))
        first = _spawn(settings, log_path, RECONGUARD_WORKER_STATE_FLUSH_SECONDS="0.001")
        try:
            asyncio.run(_history(settings))
            records = asyncio.run(_processed(settings))
        finally:
            _kill(first)
        runs = [asyncio.run(_restart(settings, log_path, probe)) for probe in range(RESTARTS)]
    numbers: dict[str, float] = {"accounts": float(ACCOUNTS), "changelog_records": float(records)}
    for key in runs[0]:
        values = sorted(run[key] for run in runs if key in run)
        numbers[f"{key}_median"] = values[len(values) // 2]
        numbers[f"{key}_max"] = values[-1]
    print(f"worker log: {log_path}")
    return numbers


if __name__ == "__main__":
    print(main())
