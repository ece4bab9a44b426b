"""Simulation speed: simulated seconds per wall second, 10 accounts polled at 1 Hz over a trading day.

The scenario: ten accounts, each holding three positions on different symbols from the first minute,
through a whole trading day (Monday 00:00 to 24:00 UTC: the FX markets' quiet Asian hours, London,
New York and the daily break), with the decision log written as ``reconguard simulate --log`` writes
it (to the null device: every line encoded and written, as it is made).
The baseline is real time (1 simulated second per wall second): the ratio is the speed-up. Target: ≥ 500×.
The day is played twice, one run after the other: in one process (``jobs=1``, the default of
``reconguard simulate``) and in ``JOBS`` worker processes of five accounts each (``jobs=2``,
``simulate --jobs 2``: ``simulation.shards``, the same log byte for byte). Each run's speed is given on
the wall clock and per CPU second, the CPU seconds summed over the processes: the parallel run's wall
speed is the gain of using two cores, and its speed per CPU second (lower than one process's: every
shard plays the whole market and trade server) shows it is no gain per core. The target line names
the runs whose wall-clock speed meets it; on a machine whose cores are busy with other work, the
parallel run cannot be faster than its CPU figure allows.
Beside them, the Python calls per account and poll of a shorter profiled run (one process): the load
of a shared machine moves CPU seconds by ±20%, and this count not at all.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import time
from datetime import UTC, datetime
from typing import Any

from simulation.runner import Outcome, play
from simulation.scenario import Scenario

ACCOUNTS = 10
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "EURGBP", "XAUUSD")
#: Seconds simulated (a day by default; BENCH_SIMULATION_SECONDS shortens it for a quick look).
SECONDS = float(os.environ.get("BENCH_SIMULATION_SECONDS", "86400"))
#: Seconds simulated by the second, profiled run that counts Python calls.
CALLS_SECONDS = 600.0
#: The baseline: real time runs one simulated second per wall second. The target is this many times it.
REAL_TIME = 1.0
TARGET = 500.0
#: The worker processes of the parallel run (the machine has two cores): shards of five accounts.
JOBS = 2


def trading_day(seconds: float = SECONDS) -> Scenario:
    accounts = [{"id": f"u-bench-{i}", "currency": ("GBP", "USD", "EUR")[i % 3], "balance": 100_000,
                 "levels": {"critical_drawdown_percent": 50, "warning_drawdown_percent": 40,
                            "daily_loss_limit_percent": 50}} for i in range(ACCOUNTS)]
    steps: list[dict[str, Any]] = [
        {"at": 30 + i, "approve": {"account": f"u-bench-{i}", "signal": f"sig-{i}-{k}",
                                   "symbol": SYMBOLS[(i + k) % len(SYMBOLS)], "direction": "buy" if k % 2 else "sell",
                                   "volume": 0.1}}
        for i in range(ACCOUNTS) for k in range(3)]
    return Scenario.model_validate({"name": "bench-trading-day", "seed": 1, "accounts": accounts, "steps": steps,
                                    "start": datetime(2024, 1, 8, tzinfo=UTC), "duration": seconds,
                                    "expect": []})


def calls_per_account_poll(seconds: float = CALLS_SECONDS) -> float:
    """Python calls (cProfile's count) per account and poll: a figure the machine's load does not move,
    to tell a change's effect from the noise of CPU time on a shared machine."""
    with open(os.devnull, "w") as out:
        profile = cProfile.Profile()
        profile.enable()
        outcome = play(trading_day(seconds), sink=lambda line: out.write(line + "\n"))
        profile.disable()
    return pstats.Stats(profile).total_calls / (outcome.polls * ACCOUNTS)


def timed(scenario: Scenario, jobs: int) -> tuple[Outcome, float, list[float]]:
    """One run written to the null device: its outcome, wall seconds and each of its processes' CPU
    seconds (this one's first, then the shards')."""
    with open(os.devnull, "w") as out:
        started, cpu_started = time.perf_counter(), time.process_time()
        outcome = play(scenario, jobs=jobs, sink=lambda line: out.write(line + "\n"))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return outcome, wall, [cpu, *outcome.shard_cpu_seconds]


def speeds(name: str, outcome: Outcome, wall: float, cpu: list[float]) -> dict[str, Any]:
    """A run's figures, each key prefixed with the run's name."""
    speed, simulated = outcome.simulated_seconds / wall, outcome.simulated_seconds
    figures = {f"{name}: wall_seconds": round(wall, 3), f"{name}: simulated_seconds_per_wall_second": round(speed, 1),
               f"{name}: times_real_time": round(speed / REAL_TIME, 1),
               # On a shared machine the wall clock counts other processes' time too: the CPU seconds say what
               # the run itself cost (summed over its processes; the wall clock's on an idle machine, jobs=1).
               f"{name}: cpu_seconds": round(sum(cpu), 3),
               f"{name}: simulated_seconds_per_cpu_second": round(simulated / sum(cpu), 1)}
    if len(cpu) > 1:  # the busiest process bounds the wall clock when each has a core of its own
        figures[f"{name}: simulated_seconds_per_cpu_second of the busiest process"] = round(simulated / max(cpu), 1)
    return figures


def main(seconds: float = SECONDS, calls_seconds: float = CALLS_SECONDS) -> dict[str, Any]:
    """The day (unless shortened) in one process, then in ``JOBS``, each timed on the wall clock and in
    CPU seconds, beside real time's one simulated second per wall second; then the profiled count."""
    scenario = trading_day(seconds)
    one, wall_one, cpu_one = timed(scenario, 1)
    many, wall_many, cpu_many = timed(scenario, JOBS)
    assert (many.log.written, many.summary()) == (one.log.written, one.summary()), "the runs must agree"
    met = [name for name, wall in (("jobs=1", wall_one), (f"jobs={JOBS}", wall_many))
           if one.simulated_seconds / wall / REAL_TIME >= TARGET]
    return {"accounts": ACCOUNTS, "poll_interval_seconds": scenario.poll_interval,
            "simulated_seconds": one.simulated_seconds, "polls": one.polls, "decision_log_lines": one.log.written,
            "real_time: simulated_seconds_per_wall_second (baseline)": REAL_TIME,
            **speeds("jobs=1", one, wall_one, cpu_one), **speeds(f"jobs={JOBS}", many, wall_many, cpu_many),
            f"jobs={JOBS}: processes that played it to the end": many.played_by,
            f"target (>= {TARGET:.0f}x real time, wall clock) met by": ", ".join(met) or "neither run",
            f"python_calls_per_account_poll ({calls_seconds:.0f} s profiled, jobs=1)":
                round(calls_per_account_poll(calls_seconds))}
