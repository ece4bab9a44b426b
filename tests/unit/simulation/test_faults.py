"""The deterministic fault simulation: seeded runs keep every invariant, a run is reproduced from its seed,
and a deliberately broken executor is caught, with the seed that shows it."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from infra.settings import GuardSettings
from producers.executor import client, loop
from producers.executor.parsing import Attempted, filling_mode
from producers.mt5 import constants as c
from simulation.faultplan import WorkerCrash, plan_of, scenario_of
from simulation.faults import (
    INVARIANTS,
    FaultSimulation,
    _play,
    report,
    reproduce_command,
    run_batch,
    run_seed,
)
from simulation.faultworker import CrashingWorker

RUNS = 25  # about half a minute of CPU; `reconguard faultsim` runs 1,000


@pytest.fixture(autouse=True)
def _quiet():
    logging.getLogger().setLevel(logging.ERROR)  # the demo platform's refused placings are part of the runs
    yield
    logging.getLogger().setLevel(logging.WARNING)


def test_seeded_runs_with_every_kind_of_fault_break_no_invariant():
    batch = run_batch(1, RUNS)
    counts, stats = batch.totals()
    failing = "\n".join(f"seed {r.seed}: {r.details}" for r in batch.failing)
    assert {name: counts[name] for name in INVARIANTS} == dict.fromkeys(INVARIANTS, 0), failing
    for injected in ("worker crashes", "inputs redelivered", "executor crash", "executor lost_reply",
                     "executor result_lost", "terminal disconnects", "decisions published again (same id)"):
        assert stats[injected] > 0, f"no {injected} in {RUNS} runs: the batch tests nothing of it"
    assert stats["liquidations judged"] >= 10 and stats["compared with fault-free"] >= 5


def test_a_seed_plays_the_same_run_every_time_and_another_seed_another():
    def decisions(seed):
        scenario = scenario_of(seed)
        return _play(FaultSimulation(scenario, plan_of(seed, scenario))).decision_log.lines

    assert decisions(3) == decisions(3)
    assert decisions(3) != decisions(4)
    assert plan_of(3, scenario_of(3)) == plan_of(3, scenario_of(3))


def test_a_restarted_worker_finds_what_its_changelog_holds_and_reads_the_uncommitted_inputs_again():
    def after_three_inputs() -> CrashingWorker:
        worker = CrashingWorker(GuardSettings())
        for n, value in enumerate("abc", 1):
            worker.changelog.input_no = n
            worker.recent.append(f"input {n}")
            worker.states["drawdown"]["u-1"], worker.states["market"]["u-1"] = value, value.upper()
        return worker

    for restore, expected in (("changelog", ("c", "C")), ("commit", ("a", "A")), ("short", ("b", "C"))):
        worker = after_three_inputs()
        worker._crash(WorkerCrash(at=0, downtime=0, redeliver=2, restore=restore, short=("drawdown", "u-1")))
        assert (worker.states["drawdown"]["u-1"], worker.states["market"]["u-1"]) == expected, restore
        assert worker.backlog == ["input 2", "input 3"]


def _blind_close(gateway, *, ticket, symbol, comment, settings):
    """A deliberate double-close bug: a close whose position is already gone is sent again "to be sure",
    as a bare opposite deal (no position named): on a hedging account that opens a new position."""
    if gateway.positions_get(ticket=ticket):
        return client.close_ticket(gateway, ticket=ticket, symbol=symbol, comment=comment, settings=settings)
    opening = next(d for d in gateway.history_deals_get(position=ticket) if d.entry == c.DEAL_ENTRY_IN)
    sell = opening.type == c.DEAL_TYPE_BUY
    tick = gateway.symbol_info_tick(symbol)
    result = gateway.order_send({
        "action": c.TRADE_ACTION_DEAL, "symbol": symbol, "volume": opening.volume, "magic": settings.magic,
        "type": c.ORDER_TYPE_SELL if sell else c.ORDER_TYPE_BUY, "price": tick.bid if sell else tick.ask,
        "deviation": 50, "comment": comment[:29], "type_time": c.ORDER_TIME_GTC,
        "type_filling": filling_mode(gateway.symbol_info(symbol).filling_mode)})
    return Attempted("closed", 1, result.retcode, price=result.price, volume=result.volume)


def test_a_double_close_is_caught_with_its_seed_and_reproduced_from_it(monkeypatch):
    # seeds whose plan crashes the executor on its first command: the command comes back to a position
    # the executor already closed, which the blind close sends again
    seeds = [s for s in range(1, 40) if any(f.command == 0 and f.kind == "crash"
                                            for f in plan_of(s, scenario_of(s)).executor)]
    clean = {s: run_seed(s, compare=False) for s in seeds}
    monkeypatch.setattr(loop, "close_ticket", _blind_close)
    broken = [run for run in (run_seed(s, compare=False) for s in seeds) if run.failed]
    assert broken, f"the blind double close broke no run of seeds {seeds}: the checker cannot fail"
    run = broken[0]
    assert run.counts["close opened"] >= 1 and any("opened a position" in d for d in run.details)
    assert not clean[run.seed].failed, "the same seed with the production executor keeps every invariant"
    again = run_seed(run.seed, compare=False)
    assert (again.counts, again.details) == (run.counts, run.details), "the seed alone reproduces the run"
    batch = run_batch(run.seed, 1)
    lines = [str(line) for line in report(batch, first_seed=run.seed)]
    assert any(f"seed {run.seed} failed" in line and reproduce_command(run.seed) in line for line in lines)
    assert reproduce_command(run.seed) == f"reconguard faultsim --seed {run.seed} --runs 1"


def test_a_crash_delivers_the_workers_own_close_commands_again_and_the_guard_knows_its_liquidation_fired():
    """close-commands is one of the worker's input topics: the commands it read back after the last commit
    are read again after a crash, in their place among the other inputs (seed 904 found them missing).
    Restored as of a commit before the trigger, the worker derives the trigger again from the redelivered
    report (the same liquidation: the same warning id), then reads its commands: it has fired already."""
    from tests.unit.streams.builders import USER
    from tests.unit.streams.test_drawdown_rules import HELD, LEVELS, readings

    worker = CrashingWorker(GuardSettings(max_reading_age_seconds=None), levels=lambda account: LEVELS)
    first = [o for event in (HELD, *readings(10_000, 8_900, 8_800)) for o in worker.process(event)]
    deadline = worker.states["drawdown"][USER].pending.deadline
    first += worker.sweep(deadline)
    orders = [o for o in first if o.event_type == "ClosePosition"]
    assert len(orders) == 2 and list(worker.recent)[-2:] == orders
    back_at = deadline + timedelta(seconds=1)
    worker.crashes = [(back_at, WorkerCrash(at=0, downtime=0, redeliver=3, restore="commit"))]
    again = worker.process(readings(8_800, start=30)[-1], back_at)
    alerts = [[(o.event_id, o.payload.status) for o in outputs if o.event_type == "GuardAlertRaised"]
              for outputs in (first, again)]
    assert [status for _, status in alerts[0]] == ["open", "ordered"]
    assert alerts[1] == alerts[0], "the trigger derived again is the same liquidation, ordered as before"
    assert [o.event_id for o in again if o.event_type == "ClosePosition"] == []
    state = worker.states["drawdown"][USER]
    assert state.pending is None and set(state.ordered) == {1001, 1002, 1003}, "its commands, read again"


@pytest.mark.parametrize("seed, found", [
    (579, "a restore one update short lost the trigger's write: the next report re-triggered under a new id"),
    (428, "a trigger derived again after a commit restore was warned again; the platform closed in between"),
    (904, "a commit restore without the read-back commands: reconciliation saw the guard's closes as outside"),
])
def test_the_seeds_that_found_a_fault_keep_every_invariant(seed, found):
    run = run_seed(seed)
    assert not run.failed, f"{found}: {run.details}"


def test_a_re_timed_liquidation_is_excused_only_for_what_the_platform_closed_first(monkeypatch):
    """Seed 428 passes because its liquidation, ordered 2 s later than without faults, found positions the
    platform had closed in between; the same check still catches the bug seeds 181 and 193 found: the lock
    ordering the close of a liquidated position seen in a redelivered older report."""
    assert run_seed(428).stats["positions a re-timed liquidation raced"] == 2
    from schemas.reports import PositionReport
    from streams.decisions import replace
    from streams.drawdown import rules

    handle = rules.handle

    def redelivered_reports_believed(state, event, levels, config, now):
        if isinstance(event.payload, PositionReport):
            state = replace(state, positions_at=None)  # the fix of seeds 181 and 193 undone
        return handle(state, event, levels, config, now)

    monkeypatch.setattr(rules, "handle", redelivered_reports_believed)
    run = run_seed(181)
    assert run.counts["disagree"] == 1 and "('close ordered', 'account_locked'" in run.details[0]
