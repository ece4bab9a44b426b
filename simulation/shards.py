"""A scenario's accounts played in parallel (``play(..., jobs=N)``): worker processes each guard a shard of
the accounts, and the parent merges their decision-log lines into the order one process writes them.

Why a shard's lines are the single run's. Every shard plays the whole world: the market (each symbol's
path is drawn from its own random stream on its own tick grid, so it does not depend on the times the
loop stops at), every account on the trade server and every step of the scenario. It observes only its
accounts: polls them, runs their reports through the worker's rules (whose state is per account),
executes their close commands and logs their lines. What the accounts share is the trade server, whose
order and deal tickets are numbered across accounts; it sees the same trades in every shard as long as
no account's decision acts on it. The decisions that do are close commands (the executor trades) and
locks and unlocks (the platform refuses or places an approved trade). A shard that meets the first of
them, or the first sweep of the worker's timer that decides something (its lines come in the worker's
order across accounts, which one shard cannot see; it follows a liquidation warning, whose close is such
a decision anyway), stops there and says where. The parent writes what every shard made before that
point, which is the single run's log up to there, then plays the scenario again in one process and writes
only the lines after it (``SkipFirst``): the run costs the parallel part more than one process does.

Order. Each line is tagged with its place in the loop: (virtual time in µs, phase, place in the phase),
see ``simulation.runner`` (``STEP``, ``SWEEP``, ``POLL``). One place belongs to one account, so to one
shard, and a shard's lines come in order: a k-way merge of the shards' streams on the tag (stable, so a
shard's lines of one place keep their order) gives the single run's order. Shards send their lines in
chunks of ``CHUNK_LINES`` through bounded queues, and the parent writes them as they merge: a day's log
(two million lines) is never held. The summary's counts and the expectations are counted by each shard
as its lines go by and added up.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import multiprocessing
import queue
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from schemas import Envelope
from schemas.commands import ClosePosition
from schemas.locks import AccountLocked, AccountUnlocked
from simulation.runner import SWEEP, DecisionLog, Outcome, Simulation, Sink
from simulation.scenario import Scenario

#: Decisions that act on the world every shard plays (the trade server): the shards may differ after one.
ACTS_ON_WORLD = (ClosePosition, AccountLocked, AccountUnlocked)
CHUNK_LINES = 4096  # lines a shard sends at once
QUEUE_CHUNKS = 8  # chunks a shard may have in flight before it waits for the parent
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Key = tuple[int, int, int]  # (virtual time in µs, phase, place)


class Diverged(Exception):
    """A decision of a shard's account acts on the world the shards share: they may differ from here."""


def shards(accounts: int, jobs: int) -> list[range]:
    """The accounts' indexes in ``jobs`` contiguous shards of near-equal size (fewer if fewer accounts)."""
    jobs = max(1, min(jobs, accounts))
    size, extra = divmod(accounts, jobs)
    bounds = [k * size + min(k, extra) for k in range(jobs + 1)]
    return [range(bounds[k], bounds[k + 1]) for k in range(jobs)]


class ShardSimulation(Simulation):
    """The whole scenario, with the accounts of ``observed`` (indexes) polled, guarded and logged."""

    def __init__(self, scenario: Scenario, *, seed: int | None, log_reports: bool, observed: range,
                 send: Callable[[Any], None]) -> None:
        self.chunks = Chunks(self, send)
        super().__init__(scenario, seed=seed, log_reports=log_reports, sink=self.chunks.add)
        self.observed = frozenset(scenario.accounts[i].id for i in observed)
        self.polled = [(place, account) for place, account in self.polled if account.user.user_id in self.observed]

    def observes(self, account_id: str) -> bool:
        return account_id in self.observed

    async def take(self, outputs: list[Envelope[Any]]) -> None:
        if (self.place[0] == SWEEP and (outputs or self.worker.failures)) or \
                any(isinstance(output.payload, ACTS_ON_WORLD) for output in outputs):
            raise Diverged
        await super().take(outputs)

    def key(self) -> Key:
        return ((self.now - _EPOCH) // _MICROSECOND, *self.place)  # type: ignore[return-value]


class Chunks:
    """A shard's sink: lines grouped by their place in the loop, sent ``CHUNK_LINES`` at a time."""

    def __init__(self, sim: ShardSimulation, send: Callable[[Any], None]) -> None:
        self.sim, self.send = sim, send
        self.groups: list[tuple[Key, list[str]]] = []
        self.lines: list[str] = []
        self.at: tuple[Any, Any] = (None, None)  # (now, place) of the group being filled
        self.count = 0

    def add(self, line: str) -> None:
        sim = self.sim
        if sim.now is not self.at[0] or sim.place is not self.at[1]:  # a new place: equal ones merge in order
            self.at, self.lines = (sim.now, sim.place), []
            self.groups.append((sim.key(), self.lines))
        self.lines.append(line)
        self.count += 1
        if self.count >= CHUNK_LINES:
            self.flush()

    def flush(self) -> None:
        if self.groups:
            self.send(("lines", self.groups))
        self.groups, self.count, self.at = [], 0, (None, None)


@dataclass(frozen=True)
class ShardEnd:
    """What a shard says when it stops: where it diverged (None: it played to the end), its counts."""

    diverged_at: Key | None
    polls: int
    simulated_seconds: float
    counts: Counter[tuple[str, str, str]]
    found: list[int]
    written: int
    cpu_seconds: float


def play_shard(scenario: Scenario, seed: int | None, log_reports: bool, observed: range, out: Any,
               collector: tuple[bool, tuple[int, ...]] = (False, (700, 10, 10))) -> None:
    """A worker process: play the scenario observing ``observed``, and send its lines and end to ``out``.
    ``collector``: whether the parent froze its objects and its thresholds (``tune_garbage_collector``),
    so a shard collects garbage as the process that started it does."""
    try:
        frozen, threshold = collector
        if frozen:
            gc.freeze()
        gc.set_threshold(*threshold)
        sim = ShardSimulation(scenario, seed=seed, log_reports=log_reports, observed=observed, send=out.put)
        diverged_at: Key | None = None
        try:
            asyncio.run(sim.run())
        except Diverged:
            diverged_at = sim.key()
        sim.chunks.flush()
        log = sim.decision_log
        out.put(("end", ShardEnd(diverged_at, sim.polls, (sim.now - scenario.start).total_seconds(), log.counts,
                                 log.found, log.written, time.process_time())))  # since the fork
    except BaseException:  # noqa: BLE001 - the parent raises it: a shard must never leave it waiting
        out.put(("failed", traceback.format_exc()))


def _stream(out: Any, process: Any, ends: list[ShardEnd]) -> Iterator[tuple[Key, list[str] | None]]:
    """A shard's groups of lines as they come; a shard that diverged ends with (its place, None)."""
    while True:
        try:
            kind, body = out.get(timeout=1.0)
        except queue.Empty:
            if process.exitcode is not None:
                raise RuntimeError(f"simulation shard {process.name} died (exit code {process.exitcode})") from None
            continue
        if kind == "lines":
            yield from body
        elif kind == "failed":
            raise RuntimeError(f"simulation shard {process.name} failed:\n{body}")
        else:
            ends.append(body)
            if body.diverged_at is not None:
                yield body.diverged_at, None
            return


class SkipFirst:
    """A sink that drops the first ``count`` lines (already written by the shards), then writes to ``sink``."""

    def __init__(self, sink: Sink, count: int) -> None:
        self.sink, self.left = sink, count

    def __call__(self, line: str) -> object:
        if self.left:
            self.left -= 1
            return None
        return self.sink(line)


def play_shards(scenario: Scenario, *, jobs: int, seed: int | None = None, log_reports: bool = True,
                sink: Sink | None = None) -> Outcome:
    """``play`` in ``jobs`` worker processes (see the module's docstring); the same log and outcome."""
    kept: list[str] = []
    ends: list[ShardEnd] = []
    processes, outs = _start(scenario, jobs, seed, log_reports)
    try:
        written, diverged = _write_merged([_stream(o, p, ends) for o, p in zip(outs, processes, strict=True)],
                                          kept.append if sink is None else sink)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
    cpu = tuple(end.cpu_seconds for end in ends)
    if not diverged:
        return _merged(scenario, ends, kept if sink is None else None, cpu)
    # One process plays it all again and writes what the shards had not (what they wrote is its own start).
    sim = Simulation(scenario, seed=seed, log_reports=log_reports,
                     sink=None if sink is None else SkipFirst(sink, written))
    outcome = asyncio.run(sim.run())
    outcome.shard_cpu_seconds = cpu
    return outcome


def _write_merged(streams: list[Iterator[tuple[Key, list[str] | None]]], write: Sink) -> tuple[int, bool]:
    """Write the shards' lines in the single run's order, up to where a shard diverged, if one did;
    return how many were written and whether one diverged."""
    written = 0
    for _, lines in heapq.merge(*streams, key=itemgetter(0)):
        if lines is None:
            return written, True
        for line in lines:
            write(line)
        written += len(lines)
    return written, False


def _start(scenario: Scenario, jobs: int, seed: int | None, log_reports: bool) -> tuple[list[Any], list[Any]]:
    """The shards' processes, started, and the queue each sends its lines on."""
    context = multiprocessing.get_context("forkserver")  # not fork: a fresh process, no copied loop or threads
    context.set_forkserver_preload(["simulation.shards"])  # a shard forks with the code imported
    parts = shards(len(scenario.accounts), jobs)
    outs = [context.Queue(maxsize=QUEUE_CHUNKS) for _ in parts]
    collector = (gc.get_freeze_count() > 0, gc.get_threshold())
    processes = [context.Process(target=play_shard, name=f"shard-{k}", daemon=True,
                                 args=(scenario, seed, log_reports, part, out, collector))
                 for k, (part, out) in enumerate(zip(parts, outs, strict=True))]
    for process in processes:
        process.start()
    return processes, outs


def _nowhere(line: str) -> None:
    return None


def _merged(scenario: Scenario, ends: list[ShardEnd], lines: list[str] | None, cpu: tuple[float, ...]) -> Outcome:
    log = DecisionLog(scenario.expect, sink=lines.append if lines is not None else _nowhere)
    log.lines = lines
    for end in ends:
        log.counts.update(end.counts)
        log.found = [a + b for a, b in zip(log.found, end.found, strict=True)]
        log.written += end.written
    return Outcome(log, ends[0].polls, ends[0].simulated_seconds, shard_cpu_seconds=cpu, played_by=len(ends))
