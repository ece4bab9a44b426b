"""`make bench`: every benchmark, each beside its baseline measured in the same run."""

from __future__ import annotations

import importlib
import sys
import time

from rich.console import Console
from rich.table import Table

from infra import logthrottle
from infra.service import tune_garbage_collector

BENCHMARKS = [
    ("projection", "bench.projection", "projection_per_s vs copy_per_s: target ratio_to_copy >= 0.3"),
    ("poller", "bench.poller", "CPU seconds per 1,000 accounts per second of polling: target <= 0.1"),
    ("executor", "bench.executor", "close latency, command appended to result appended"),
    ("streams", "bench.streams", "three processors vs a plain one-table agent (target >= 5x); "
                                 "guard reaction p99 at 500 accounts x 1 Hz (target < 250 ms)"),
    ("restart", "bench.restart", "a killed streams worker's way back: spawn to its first decision, with its "
                                 "changelog's records to restore"),
    ("simulation", "bench.simulation", "simulated seconds per wall second, 10 accounts at 1 Hz over a trading day, "
                                       "beside real time (target >= 500x)"),
]


def main(selected: list[str]) -> int:
    tune_garbage_collector()  # as every reconguard process does; baselines in this process share it
    logthrottle.install()
    console = Console()
    failures = 0
    for name, module, target in BENCHMARKS:
        if selected and name not in selected:
            continue
        console.rule(f"{name} — {target}")
        started = time.perf_counter()
        try:
            numbers = importlib.import_module(module).main()
        except Exception as error:  # noqa: BLE001 - report and go on to the next benchmark
            console.print(f"[red]{name} failed: {error!r}[/red]")
            failures += 1
            continue
        table = Table("measure", "value")
        for key, value in numbers.items():
            table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
        console.print(table)
        console.print(f"[dim]{name} took {time.perf_counter() - started:.0f}s[/dim]")
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:  # `python -m bench load`: the whole pipeline, not a part (bench/load.py)
        from bench.load import main as load

        sys.exit(load(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
