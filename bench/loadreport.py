"""The figures of `make load` into docs/performance.md (a table between markers) and a PNG plot."""

from __future__ import annotations

import datetime
import math
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.load import Point

DOCS = Path(__file__).resolve().parents[1] / "docs"
START, END = "<!-- load-results:start -->", "<!-- load-results:end -->"
PLOT = "performance-load.png"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, {platform.system()} {platform.release()}"


def _ms(value: float) -> str:
    return "no guard close" if math.isnan(value) else f"{value:,.0f}"


def table(points: list[Point]) -> str:
    lines = [("| accounts | load avg (1 min) at end | start-up (s) | account reports/s | events/s (all topics) | "
              "lag p99 / max, worst group (s) | reaction p50 / p99 (ms) | CPU (cores, all processes) | "
              "CPU of the poll: poller / simulator (cores) | PSS (MiB, all) | holds |"),
             "| ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | --- |"]
    for p in points:
        n = p.numbers
        worst = max(n["lag_p99_s"], key=n["lag_p99_s"].get) if n["lag_p99_s"] else "-"
        lines.append(
            f"| {p.accounts}{f' ({p.workers} workers)' if p.workers > 1 else ''} | {p.load_average[0]:.2f} | {_seconds(n.get('startup_s'))} | "
            f"{n['events_per_s'].get('account-reports', 0.0):,.0f} | {sum(n['events_per_s'].values()):,.0f} | "
            f"{n['lag_p99_s'].get(worst, math.nan):.2f} / {n['lag_max_s'].get(worst, math.nan):.2f} ({worst}) | "
            f"{_ms(n['reaction_p50_ms'])} / {_ms(n['reaction_p99_ms'])} | {sum(n['cpu_share'].values()):.2f} | "
            f"{_cores(n['cpu_share'], 'poller')} / {_cores(n['cpu_share'], 'simulator')} | "
            f"{sum(n['rss_mib'].values()):,.0f} | {_verdict(p)} |")
    return "\n".join(lines)


def _cores(shares: dict[str, float], process: str) -> str:
    return f"{shares[process]:.2f}" if process in shares else "-"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _verdict(point: Point) -> str:
    rate = point.numbers["events_per_s"].get("account-reports", 0.0) / point.accounts
    if rate == 0:
        return "no: the accounts were not polled (see the poller's log)"
    if not point.polled:
        return f"no: each account polled {rate:.2f} times a second, not 1 (rounds took {1 / rate:.0f} s)"
    return "yes" if point.holds() else "no"


def details(point: Point) -> str:
    n = point.numbers
    rows = [f"- **{key}**: " + (", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) if isinstance(value, dict)
                               else _fmt(value)) for key, value in n.items()]
    return f"Largest run ({point.accounts} accounts, {point.seconds:g} s measured), every figure:\n\n" + "\n".join(rows)


def per_account_day(point: Point) -> str:
    """Bytes per account per day, from the growth measured (the demo's four accounts count too)."""
    accounts = point.accounts + 4
    tables = point.numbers["table_bytes_per_hour"]
    lines = [f"| {name} | {size * 24 / accounts / 2**20:,.2f} |" for name, size in sorted(tables.items()) if size]
    broker = point.numbers["broker_bytes_per_hour"] * 24 / accounts / 2**20
    return "\n".join(["| where | MiB per account per day |", "| --- | ---: |",
                      f"| broker (keys and values published) | {broker:,.2f} |", *lines])


def _fmt(value: object) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else str(value)


def plot(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for workers in sorted({p.workers for p in points}):  # one line per worker count
        series = [p for p in points if p.workers == workers]
        accounts, label = [p.accounts for p in series], f"{workers} worker{'s' if workers > 1 else ''}"
        axes[0].plot(accounts, [p.lag_p99_s for p in series], marker="o", label=label)
        axes[1].plot(accounts, [p.reaction_p99_ms for p in series], marker="o", label=label)
        axes[2].plot(accounts, [sum(p.numbers["cpu_share"].values()) for p in series], marker="o", label=label)
    axes[0].axhline(2.0, color="red", linestyle="--", linewidth=1)
    axes[0].set_title("worst group lag p99 (s)")
    axes[1].axhline(250.0, color="red", linestyle="--", linewidth=1)
    axes[1].set_title("guard reaction p99 (ms)")
    axes[2].set_title("CPU, all processes (cores)")
    for axis in axes:
        axis.set_xlabel("accounts")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write(points: list[Point], *, command: str, docs: Path = DOCS) -> Path:
    """Replace the results section of docs/performance.md and the plot beside it."""
    plot(points, docs / PLOT)
    largest = max((p for p in points if p.polled), key=lambda p: p.accounts, default=points[-1])
    held = [p.accounts for p in points if p.holds()]
    section = "\n".join([
        START,
        f"Command: `{command}`, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {machine()}.",
        "",
        "The load average is the whole machine's, this run's own processes included; anything else running "
        "on the same cores depresses every figure by an amount the table cannot show.",
        "",
        table(points),
        "",
        f"Largest N holding lag < 2 s and reaction p99 < 250 ms: "
        f"{max(held) if held else 'none of the counts tried'}.",
        "",
        f"![lag, reaction and CPU against accounts]({PLOT})",
        "",
        f"Storage per account per day, estimated from the {largest.accounts}-account run's growth "
        "(before retention; at 1 Hz, with the demo's four accounts counted):",
        "",
        per_account_day(largest),
        "",
        details(largest),
        END,
    ])
    doc = docs / "performance.md"
    text = doc.read_text()
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    doc.write_text(before + section + after if START in text else text.rstrip() + "\n\n" + section + "\n")
    return doc
