"""Deterministic fault simulation: the chaos round's invariants over many seeded virtual-time runs.

``reconguard faultsim --runs 1000 --seed S`` plays seeds S, S+1, ... Each seed is one run, fully
determined by its number: a random scenario (``faultplan.scenario_of``) played through the runner
(the production poller parsing, rules and executor, ``simulation.runner``) with a fault plan
(``faultplan.plan_of``) injected around the worker and the executor (``simulation.faultworker``):
worker crashes with redelivery of the uncommitted inputs and state restored from the changelog
(complete, one update short, or as of the commit), lost ``order_send`` answers, executor crashes
between trading and publishing (the command redelivered at once or later), terminal disconnects.

After each run it checks what ``chaos/checks.py`` checks after a chaos round, with the same functions,
on the decisions the run published and the deals on the simulated terminals:
- ``closed twice``: positions the executor closed more than once; ``close opened``: executor deals
  that opened a position;
- ``not executed``: liquidations (critical warnings with a deadline, due ``BOUND`` s before the end)
  with a position still open, unless the account's terminal was down at the end of the run;
- ``short notice``: the executor's last closing deal less than the grace after the warning was first
  published; ``late``: that deal more than ``BOUND`` s after the first published deadline, unless the
  account's terminal was down between the deadline and the close;
- ``disagree``: for a plan whose faults keep the truth (``FaultPlan.keeps_truth``: delivery faults only
  — crashes with redelivery and restore but no downtime, lost replies, executor crashes redelivered at
  once), the run's conclusions differ from the same seed's fault-free run. Conclusions, per account:
  the divergences found (reason, symbol), the guard alerts raised (type; the warning level of a
  liquidation), the first close commands (reason, symbol, tickets), the positions the executor closed,
  and whether the account was locked. Not compared: times, prices, retries and alert revisions,
  which a delivery fault may legitimately change (a close ordered 1 s later fills at another price);
  nor, when the faulted run ordered an account's liquidation at another time (a trigger derived again
  after a restart, warned again), its naming and closing of positions the platform (or a stop) closed
  before the later of the two (``raced``): which of them closes such a position is a race of timing;
- ``rule failed``: events a rule raised on (dead-lettered); ``crashed``: a run that raised.
Every count must be 0. A failing seed prints with the command that plays exactly that run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from chaos.checks import (
    EXECUTOR_MAGIC,
    Deal,
    Record,
    attach_closes,
    closes_per_position,
    judge,
    liquidations,
    open_positions,
    read_deals,
)
from infra.settings import GuardSettings
from producers.executor.ledger import LogLedger
from producers.executor.loop import ExecutorConfig, market_calendar
from producers.mt5 import constants as c
from schemas import Envelope
from schemas.commands import ClosePosition
from schemas.decisions import DivergenceDetected, GuardAlertRaised
from schemas.locks import AccountLocked
from schemas.results import CloseOutcome
from simulation.faultplan import FaultPlan, TerminalDisconnect, plan_of, scenario_of
from simulation.faultworker import CrashingWorker, FaultyExecutor
from simulation.runner import Simulation
from simulation.scenario import Scenario
from streams.alerts.lifecycle import LIQUIDATIONS

BOUND = 15.0  # a close may come this long after its deadline (chaos: RoundOptions.bound)
INVARIANTS = ("closed twice", "close opened", "not executed", "short notice", "late", "disagree", "rule failed",
              "crashed")


class FaultSimulation(Simulation):
    """A scenario run with a fault plan, keeping what it published for the checks."""

    def __init__(self, scenario: Scenario, plan: FaultPlan, *,
                 executor_type: type[FaultyExecutor] = FaultyExecutor) -> None:
        super().__init__(_with_disconnects(scenario, plan.disconnects), log_reports=False)
        self.plan = plan
        start = scenario.start
        self.worker = CrashingWorker(self.guard, levels=self.worker.levels, crashes=[
            (start + timedelta(seconds=c.at), c) for c in plan.crashes])
        self.executor = executor_type(gateways=self.executor.gateways, ledger=LogLedger(None), producer=None,
                                      prefix="", config=ExecutorConfig(next_open=market_calendar(self.guard)),
                                      clock=lambda: self.now, faults={f.command: f for f in plan.executor})
        self.records: list[Record] = []
        self.rule_failures: list[str] = []
        self._redelivering = False

    async def take(self, outputs: list[Envelope[Any]]) -> None:
        if not self._redelivering and self.executor.later:
            self._redelivering = True
            try:
                for command in self.executor.due_again(self.now):  # the executor's consumer reads it again
                    await super().take([command])
            finally:
                self._redelivering = False
        await super().take(outputs)

    async def _act(self, step: Any, index: int) -> None:
        name, action = step.action
        if name == "platform_close" and action.signal not in self.platform.tickets:
            return  # the platform closes only what it placed (the broker may have refused to place it)
        await super()._act(step, index)

    def log(self, event: Envelope[Any], fields: dict[str, Any]) -> None:
        super().log(event, fields)
        if "dead_lettered" in fields:
            self.rule_failures.append(f"{event.event_type} {fields['id']}: {fields['dead_lettered']}")
        else:
            self.records.append(Record(event, self.now.timestamp()))


def _with_disconnects(scenario: Scenario, disconnects: Iterable[TerminalDisconnect]) -> Scenario:
    """The scenario with the plan's disconnects as steps, played long enough after them for a liquidation
    refused while the terminal was down to be retried once it is back (``recovery``)."""
    steps = [*scenario.steps, *(
        {"at": d.at, "disconnect": {"account": d.account, "duration": d.duration, "kind": d.kind}} for d in disconnects)]
    if len(steps) == len(scenario.steps):
        return scenario
    return Scenario.model_validate(scenario.model_dump() | {"duration": scenario.end().timestamp() - scenario.start.timestamp() + recovery(scenario), "steps": [
        s if isinstance(s, dict) else s.model_dump(exclude_none=True) for s in steps]})


def recovery(scenario: Scenario) -> float:
    """Seconds from a refused liquidation to its first retry after the fast ones, plus the bound: a close
    refused by a terminal that was down is retried at the escalated cadence (``docs/guard-rules.md``)."""
    guard = GuardSettings(**scenario.guard)
    fast = guard.liquidation_retry_seconds * (2 ** guard.liquidation_fast_retries - 1)
    return fast + guard.liquidation_escalated_retry_seconds + BOUND


# --- one run ------------------------------------------------------------------------------------------------

@dataclass
class Run:
    """One seed's run: its invariant counts, what went wrong in detail, and what was injected."""

    seed: int
    plan: FaultPlan
    counts: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> bool:
        return any(self.counts[name] for name in INVARIANTS)

    def fail(self, invariant: str, detail: str, n: int = 1) -> None:
        self.counts[invariant] += n
        self.details.append(f"{invariant}: {detail}")


def run_seed(seed: int, *, executor_type: type[FaultyExecutor] = FaultyExecutor, compare: bool = True) -> Run:
    """Play one seed with its faults, check every invariant, and (if its faults keep the truth) compare
    its conclusions with the same seed played without faults."""
    scenario = scenario_of(seed)
    plan = plan_of(seed, scenario)
    run = Run(seed, plan)
    try:
        faulted = _play(FaultSimulation(scenario, plan, executor_type=executor_type))
        check(run, faulted, scenario)
        if compare and plan.keeps_truth:
            run.stats["compared with fault-free"] += 1
            clean = _play(FaultSimulation(scenario, FaultPlan(), executor_type=executor_type))
            excused = raced(faulted, clean)
            run.stats["positions a re-timed liquidation raced"] += sum(len(p) for p in excused.values())
            _compare(run, conclusions(faulted), conclusions(clean), excused)
    except Exception:  # noqa: BLE001 -- a crash of the run is a finding, reported with its seed like any other
        run.fail("crashed", traceback.format_exc(limit=-3).strip().replace("\n", " | "))
    return run


def _play(sim: FaultSimulation) -> FaultSimulation:
    asyncio.run(sim.run())
    return sim


def check(run: Run, sim: FaultSimulation, scenario: Scenario) -> None:
    """The chaos round's checks (``chaos.checks``), on the run's published records and terminal deals."""
    logins = {account.user.login: account_id for account_id, account in sim.accounts.items()}
    deals = read_deals(sim.broker, logins)
    twice, opened = closes_per_position(deals)
    if twice:
        run.fail("closed twice", f"{twice} position(s) closed more than once by the executor", twice)
    if opened:
        run.fail("close opened", f"{opened} executor deal(s) opened a position", opened)
    end = sim.now.timestamp()
    down = _terminal_down(run.plan, scenario)
    found = liquidations(*_by_kind(sim.records))
    attach_closes(found, deals, open_positions(deals))
    for account_id in sorted({f.user_id for f in found.values()}):
        mine = {k: f for k, f in found.items() if f.user_id == account_id}
        verdict = judge(mine, now=end, bound=BOUND, terminal_down=down.get(account_id, []))
        down_at_end = any(stop is None or stop >= end for _, stop in down.get(account_id, []))
        run.stats["liquidations judged"] += verdict.due
        for alert_id in verdict.not_executed if not down_at_end else ():
            run.fail("not executed", f"{account_id} liquidation {alert_id}: {sorted(mine[alert_id].still_open)} still "
                                     f"open; answers {mine[alert_id].outcomes}")
        for alert_id in verdict.short_notice:
            f = mine[alert_id]
            run.fail("short notice", f"{account_id} liquidation {alert_id}: {f.last_close - f.warned_at:.2f} s of "
                                     f"notice, grace {f.grace:g} s")  # type: ignore[operator]
        for alert_id in verdict.late:
            f = mine[alert_id]
            run.fail("late", f"{account_id} liquidation {alert_id}: closed {f.last_close - f.deadline:.2f} s after "
                             f"its deadline")  # type: ignore[operator]
    for failure in sim.rule_failures:
        run.fail("rule failed", failure)
    run.stats["positions closed by the executor"] += len(_closes(deals))
    run.stats.update(sim.worker.stats)
    run.stats.update({f"executor {k}": v for k, v in sim.executor.stats.items()})
    run.stats["terminal disconnects"] += len(run.plan.disconnects)
    ids = Counter(r.envelope.event_id for r in sim.records)
    run.stats["decisions published again (same id)"] += sum(n - 1 for n in ids.values())


def _closes(deals: Iterable[Deal]) -> list[Deal]:
    """The executor's closing deals."""
    return [d for d in deals if d.magic == EXECUTOR_MAGIC and d.entry in (c.DEAL_ENTRY_OUT, c.DEAL_ENTRY_OUT_BY)]


def _by_kind(records: list[Record]) -> tuple[list[Record], list[Record], list[Record]]:
    alerts = [r for r in records if isinstance(r.envelope.payload, GuardAlertRaised)]
    commands = [r for r in records if isinstance(r.envelope.payload, ClosePosition)]
    results = [r for r in records if isinstance(r.envelope.payload, CloseOutcome)]
    return alerts, commands, results


def _terminal_down(plan: FaultPlan, scenario: Scenario) -> dict[str, list[tuple[float, float | None]]]:
    start = scenario.start.timestamp()
    down: dict[str, list[tuple[float, float | None]]] = {}
    for d in plan.disconnects:
        down.setdefault(d.account, []).append((start + d.at, start + d.at + d.duration))
    return down


# --- the faulted run against the fault-free one -----------------------------------------------------------------

Conclusions = dict[str, set[tuple[Any, ...]]]


def conclusions(sim: FaultSimulation) -> Conclusions:
    """Per account, what the guard concluded and did (see the module docstring), deduplicated by id."""
    found: Conclusions = {account_id: set() for account_id in sim.accounts}
    seen: set[Any] = set()
    for record in sim.records:
        event = record.envelope
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        p = event.payload
        if isinstance(p, DivergenceDetected):
            found[event.account_id].add(("divergence", str(p.divergence_reason), p.symbol))
        elif isinstance(p, GuardAlertRaised):
            found[event.account_id].add(("alert", str(p.alert_type)))
        elif isinstance(p, ClosePosition) and p.attempt == 1:
            found[event.account_id].add(("close ordered", str(p.reason), p.symbol, tuple(p.tickets)))
        elif isinstance(p, AccountLocked):
            found[event.account_id].add(("locked",))
    by_login = {account.user.login: account_id for account_id, account in sim.accounts.items()}
    for deal in _closes(read_deals(sim.broker, by_login)):
        found[by_login[deal.login]].add(("closed by the executor", deal.position_id))
    return found


def raced(faulted: FaultSimulation, clean: FaultSimulation) -> dict[str, set[int]]:
    """Per account whose liquidation the faulted run ordered at another time than the fault-free one (its
    trigger derived again after a restart, its notice running from the warning as published again): the
    positions something other than the executor (the platform, a stop) closed before the later of the two.
    Whether the liquidation still named them, and who closed them, is a race its timing decided."""
    first = [_first_liquidation(sim) for sim in (faulted, clean)]
    found: dict[str, set[int]] = {}
    for account_id in set(first[0]) & set(first[1]):
        at = {sim_first[account_id] for sim_first in first}
        if len(at) == 1:
            continue  # ordered at the same time: no race to excuse
        found[account_id] = {deal.position_id for sim in (faulted, clean) for deal in _outside_closes(sim, account_id)
                             if deal.time <= max(at)}
    return found


def _first_liquidation(sim: FaultSimulation) -> dict[str, float]:
    """When each account's first liquidation command was appended."""
    found: dict[str, float] = {}
    for record in sim.records:
        p = record.envelope.payload
        if isinstance(p, ClosePosition) and p.reason in LIQUIDATIONS:
            found.setdefault(record.envelope.account_id, record.timestamp)
    return found


def _outside_closes(sim: FaultSimulation, account_id: str) -> list[Deal]:
    login = sim.accounts[account_id].user.login
    return [d for d in read_deals(sim.broker, [login])
            if d.magic != EXECUTOR_MAGIC and d.entry in (c.DEAL_ENTRY_OUT, c.DEAL_ENTRY_OUT_BY)]


def _without(found: set[tuple[Any, ...]], positions: set[int]) -> set[tuple[Any, ...]]:
    """An account's conclusions without the liquidation's naming and closing of ``positions``."""
    kept: set[tuple[Any, ...]] = set()
    for conclusion in found:
        if conclusion[0] == "closed by the executor" and conclusion[1] in positions:
            continue
        if conclusion[0] == "close ordered" and conclusion[1] in LIQUIDATIONS:
            tickets = tuple(t for t in conclusion[3] if t not in positions)
            conclusion = (*conclusion[:3], tickets) if tickets else None
        if conclusion is not None:
            kept.add(conclusion)
    return kept


def _compare(run: Run, faulted: Conclusions, clean: Conclusions, raced: dict[str, set[int]]) -> None:
    for account_id in sorted(set(faulted) | set(clean)):
        excused = raced.get(account_id, set())
        mine, theirs = (_without(found.get(account_id, set()), excused) for found in (faulted, clean))
        only_faulted = sorted(mine - theirs, key=repr)
        only_clean = sorted(theirs - mine, key=repr)
        if only_faulted or only_clean:
            run.fail("disagree", f"{account_id}: only with faults {only_faulted}; only without {only_clean}")


# --- many runs ---------------------------------------------------------------------------------------------------

@dataclass
class Batch:
    runs: list[Run]
    seconds: float

    def totals(self) -> tuple[Counter[str], Counter[str]]:
        counts: Counter[str] = Counter({name: 0 for name in INVARIANTS})
        stats: Counter[str] = Counter()
        for run in self.runs:
            counts.update(run.counts)
            stats.update(run.stats)
        return counts, stats

    @property
    def failing(self) -> list[Run]:
        return [run for run in self.runs if run.failed]


def run_batch(seed: int, runs: int, *, executor_type: type[FaultyExecutor] = FaultyExecutor,
              progress: Callable[[Run], None] | None = None, jobs: int = 1) -> Batch:
    """Seeds ``seed`` … ``seed + runs - 1``, one run each (in ``jobs`` processes: each run depends only on
    its seed, so the results are the same)."""
    started = time.perf_counter()
    one = functools.partial(run_seed, executor_type=executor_type)
    done = []
    with contextlib.ExitStack() as stack:
        mapped: Iterable[Run] = map(one, range(seed, seed + runs)) if jobs <= 1 else \
            stack.enter_context(ProcessPoolExecutor(jobs)).map(one, range(seed, seed + runs), chunksize=5)
        for run in mapped:
            done.append(run)
            if progress is not None:
                progress(run)
    return Batch(done, time.perf_counter() - started)


def reproduce_command(seed: int) -> str:
    return f"reconguard faultsim --seed {seed} --runs 1"


def report(batch: Batch, *, first_seed: int, verbose: bool = False) -> list[Any]:
    """The tables and lines to print: invariant counts, what was injected, and every failing seed."""
    from rich.table import Table

    counts, stats = batch.totals()
    n = len(batch.runs)
    failing_runs = Counter(name for run in batch.runs for name in INVARIANTS if run.counts[name])
    table = Table(title=f"faultsim: {n} run(s), seeds {first_seed}–{first_seed + n - 1}, "
                        f"{batch.seconds:.1f} s wall")
    for column in ("invariant", "count", "runs failing"):
        table.add_column(column)
    for name in INVARIANTS:
        table.add_row(name, str(counts[name]), str(failing_runs[name]))
    injected = Table(title="injected and checked")
    injected.add_column("what")
    injected.add_column("count")
    for name, value in sorted(stats.items()):
        injected.add_row(name, str(value))
    lines: list[Any] = [table, injected]
    for run in batch.failing:
        lines.append(f"[red]seed {run.seed} failed[/red] ({run.plan.describe()}); reproduce: "
                     f"{reproduce_command(run.seed)}")
        lines += [f"  {detail}" for detail in run.details]
    if verbose:
        for run in batch.runs:
            lines.append(f"seed {run.seed}: {run.plan.describe()}")
    return lines


def main(argv: list[str] | None = None) -> int:
    import argparse

    from rich.console import Console

    parser = argparse.ArgumentParser(prog="python -m simulation.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="print every run's fault plan")
    parser.add_argument("--jobs", type=int, default=1, help="processes to run the seeds in")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # the demo platform's refused placings are part of the runs
    return print_batch(args.seed, args.runs, verbose=args.verbose, console=Console(), jobs=args.jobs)


def print_batch(seed: int, runs: int, *, verbose: bool, console: Any, jobs: int = 1) -> int:
    """Run and print a batch; the exit code is 1 if any invariant count is not 0."""
    started = time.perf_counter()

    failing: list[int] = []
    totals: Counter[str] = Counter()

    def progress(run: Run) -> None:
        if run.failed:
            failing.append(run.seed)
            print(f"faultsim: seed {run.seed} failed: {run.details}; reproduce: {reproduce_command(run.seed)}",
                  file=sys.stderr, flush=True)
        totals.update(run.counts)
        if (run.seed - seed + 1) % 50 == 0:
            print(f"faultsim: {run.seed - seed + 1} of {runs} runs, {time.perf_counter() - started:.0f} s, "
                  f"{len(failing)} failing; " + ", ".join(f"{name} {totals[name]}" for name in INVARIANTS),
                  file=sys.stderr, flush=True)

    batch = run_batch(seed, runs, progress=progress, jobs=jobs)
    for line in report(batch, first_seed=seed, verbose=verbose or runs == 1):
        console.print(line, highlight=False, soft_wrap=True)
    return 1 if batch.failing else 0


if __name__ == "__main__":
    raise SystemExit(main())
