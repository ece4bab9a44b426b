"""Simulation speed: simulated seconds per wall second, 10 accounts polled at 1 Hz over a trading day.

The scenario: ten accounts, each holding three positions on different symbols from the first minute,
through a whole trading day (Monday 00:00 to 24:00 UTC: the FX markets' quiet Asian hours, London,
New York and the daily break), with the decision log written as ``reconguard simulate --log`` writes
it (to the null device: every line encoded and written, as it is made).
The baseline is real time (1 simulated second per wall second): the ratio is the speed-up. Target: ≥ 500×.
Beside it, the Python calls per account and poll of a shorter profiled run: the load of a shared machine
moves CPU seconds by ±20%, and this count not at all.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import time
from datetime import UTC, datetime
from typing import Any

from simulation.runner import play
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


def main(seconds: float = SECONDS, calls_seconds: float = CALLS_SECONDS) -> dict[str, Any]:
    """One run over ``seconds`` (a trading day unless shortened), timed on the wall clock and in CPU
    seconds, beside real time's one simulated second per wall second; then the profiled count."""
    scenario = trading_day(seconds)
    with open(os.devnull, "w") as out:
        started, cpu_started = time.perf_counter(), time.process_time()
        outcome = play(scenario, sink=lambda line: out.write(line + "\n"))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    speed = outcome.simulated_seconds / wall
    return {"accounts": ACCOUNTS, "poll_interval_seconds": scenario.poll_interval,
            "simulated_seconds": outcome.simulated_seconds, "polls": outcome.polls,
            "decision_log_lines": outcome.log.written, "wall_seconds": round(wall, 3),
            "real_time: simulated_seconds_per_wall_second (baseline)": REAL_TIME,
            "simulated_seconds_per_wall_second": round(speed, 1),
            "times_real_time": round(speed / REAL_TIME, 1),
            f"target_met (>= {TARGET:.0f}x real time)": speed / REAL_TIME >= TARGET,
            # On a shared machine the wall clock counts other processes' time too: the CPU seconds say what
            # the run itself cost (the same as the wall clock on an idle machine).
            "cpu_seconds": round(cpu, 3), "simulated_seconds_per_cpu_second": round(outcome.simulated_seconds / cpu, 1),
            f"python_calls_per_account_poll ({calls_seconds:.0f} s profiled)": round(calls_per_account_poll(calls_seconds))}
