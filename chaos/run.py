"""A chaos run: start the topology, then rounds of seeded faults under load, each followed by the checks.

Each round drives a few load accounts through their critical level (a large EURUSD buy, then the
quote stepped down), does every fault of its plan at its time, lets the services come back (the
orchestrator restarts whatever is down), waits until the round's liquidations are due and checks:
live tables = replay, positions closed twice or opened by a close, liquidations executed, notice,
and closes on time. Every count is printed as it is, zero or not; the exit code is 1 if any is not 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from chaos.checks import (
    attach_closes,
    closes_per_position,
    judge,
    liquidations,
    open_positions,
    read_deals,
    read_log,
    still_open_drives,
)
from chaos.schedule import Fault, RoundPlan, plan_round, restart_delays
from chaos.topology import Topology
from infra.embedded import wait_until
from producers.demo.remote import RemoteBroker
from producers.mt5 import constants as c
from producers.mt5.simulator.server import load_login
from projections.verify import report_lines, verify

console = Console(width=220)
DRIVEN_SYMBOL = "EURUSD"
DRIVE_COMMENT = "chaos drive"


@dataclass(frozen=True)
class Options:
    seed: int = 1
    rounds: int = 5
    accounts: int = 200
    round_seconds: float = 90.0
    bound: float = 15.0  # a close may come this long after its deadline
    directory: Path | None = None
    settle_limit: float = 120.0


@dataclass
class RoundResult:
    number: int
    faults: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    liquidations: str = ""
    due: int = 0
    min_notice: float | None = None
    notes: list[str] = field(default_factory=list)


COUNTED = ("rows lost", "rows extra", "rows changed", "closed twice", "opened by a close", "not executed",
           "drives not closed", "notice < grace", "late", "service crashes")


def main(options: Options) -> int:
    results = run_chaos(options)
    _print(results)
    return 0 if all(sum(r.counts.values()) == 0 for r in results) else 1


def run_chaos(options: Options) -> list[RoundResult]:
    directory = options.directory or Path(".reconguard") / f"chaos-{options.seed}"
    shutil.rmtree(directory, ignore_errors=True)
    delays = restart_delays(options.seed)
    with _fake_telegram(options.accounts) as telegram_url:
        topology = Topology(directory.resolve(), seed=options.seed, accounts=options.accounts,
                            telegram_url=telegram_url, restart_delay=lambda: round(delays.uniform(0.5, 2.0), 2))
        try:
            console.print(f"chaos: seed {options.seed}, {options.rounds} rounds of {options.round_seconds:g} s, "
                          f"{options.accounts} load accounts + 4 demo at 1 Hz; logs in {topology.logs}")
            topology.start_servers()
            topology.prepare()
            topology.start_services()
            # The guard measures drawdown from the equity it has seen: drive no account it has not seen yet.
            wait_until(lambda: topology.assessed_accounts() >= options.accounts + 4, timeout=300,
                       what="a first assessment of every account", interval=1.0)
            broker = RemoteBroker(f"127.0.0.1:{topology.simulator_port}")
            return [run_round(topology, broker, options, n) for n in range(1, options.rounds + 1)]
        finally:
            topology.stop()


def run_round(topology: Topology, broker: RemoteBroker, options: Options, number: int) -> RoundResult:
    plan = plan_round(options.seed, number, seconds=options.round_seconds, load_accounts=options.accounts)
    console.rule(f"round {number}: " + ", ".join(f"{f.kind} at {f.at:g}s" for f in plan.faults))
    started = time.monotonic()
    driver = threading.Thread(target=_drive, args=(broker, plan), daemon=True)
    driver.start()
    result = RoundResult(number)
    for fault in plan.faults:
        delay = started + fault.at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        result.faults.append(_do(topology, fault))
    driver.join(timeout=options.round_seconds)
    rest = started + options.round_seconds - time.monotonic()
    if rest > 0:
        time.sleep(rest)
    _settle(topology, broker, options, final=number == options.rounds)
    _check(topology, broker, options, result)
    _print([result])
    return result


def _do(topology: Topology, fault: Fault) -> str:
    console.print(f"  {time.strftime('%H:%M:%S')} {fault.kind}" + (
        f" for {fault.duration:g}s" if not fault.kind.startswith("kill") else ""))
    if fault.kind.startswith("kill "):
        topology.kill(fault.kind.removeprefix("kill "))
    elif fault.kind == "database killed":
        started = time.time()
        topology.kill_postgres()
        time.sleep(fault.duration)
        topology.restart_postgres()
        topology.outages.append(("database", started, time.time()))
    elif fault.kind == "database frozen":
        started = time.time()
        topology.freeze_postgres(True)
        time.sleep(fault.duration)
        topology.freeze_postgres(False)
        topology.outages.append(("database frozen", started, time.time()))
    elif fault.kind == "broker cut":
        started = time.time()
        topology.proxy.cut()
        time.sleep(fault.duration)
        topology.proxy.restore()
        topology.outages.append(("broker", started, time.time()))
    return fault.kind


def _drive(broker: RemoteBroker, plan: RoundPlan, *, steps: int = 30, step_percent: float = 0.05) -> None:
    """Open a 2-lot EURUSD buy on each planned account, then step the quote down 1.5 % over 30 s."""
    for index in plan.liquidated:
        with contextlib.suppress(Exception):  # a simulator down right now: that account is spared
            broker.manual_open(load_login(index), DRIVEN_SYMBOL, c.ORDER_TYPE_BUY, 2.0, comment=DRIVE_COMMENT)
    for _ in range(steps):
        time.sleep(1.0)
        with contextlib.suppress(Exception):
            tick = broker.tick(DRIVEN_SYMBOL)
            step = tick.bid * step_percent / 100
            broker.set_quote(DRIVEN_SYMBOL, round(tick.bid - step, 5), round(tick.ask - step, 5))


def _settle(topology: Topology, broker: RemoteBroker, options: Options, *, final: bool) -> None:
    """Every service back; after the last round, also every liquidation due and every drive closed (or the
    settle limit reached: what is still open then is counted)."""
    deadline = time.monotonic() + options.settle_limit
    while not topology.all_up() and time.monotonic() < deadline:
        time.sleep(0.5)
    if not final:
        time.sleep(5.0)
        return
    while time.monotonic() < deadline:
        time.sleep(5.0)
        with contextlib.suppress(Exception):  # a check that cannot read now is simply tried again
            read_at = time.time()
            log = asyncio.run(read_log(topology.settings))
            found = liquidations(log["alerts"], log["close-commands"])
            drives = still_open_drives(read_deals(broker, _logins(options)), DRIVE_COMMENT)
            if not drives and all(f.deadline + options.bound < read_at for f in found.values()):
                return


def _check(topology: Topology, broker: RemoteBroker, options: Options, result: RoundResult) -> None:
    settings = topology.settings
    checked = asyncio.run(verify(settings))
    tables = {t.table: t for t in checked.tables}
    result.counts["rows lost"] = sum(len(t.lost) for t in tables.values()) + sum(checked.unreadable.values())
    result.counts["rows extra"] = sum(len(t.extra) for t in tables.values())
    result.counts["rows changed"] = sum(len(t.changed) for t in tables.values())
    if checked.differences:
        result.notes += report_lines(checked)
    read_at = time.time()  # the log as read now: only what was due by now is judged (reading deals takes a while)
    log = asyncio.run(read_log(settings))
    deals = read_deals(broker, _logins(options))
    twice, opened = closes_per_position(deals)
    # a drive needs a few polls to confirm its breach, then the grace: younger ones may still be on their way
    drives = [d for d in still_open_drives(deals, DRIVE_COMMENT) if time.time() - d.time > options.bound + 45]
    result.counts["drives not closed"] = len(drives)
    for deal in drives[:5]:
        result.notes.append(f"  drive not closed: login {deal.login} position {deal.position_id} opened {_clock(deal.time)}")
    result.counts["closed twice"], result.counts["opened by a close"] = twice, opened
    found = liquidations(log["alerts"], log["close-commands"], log["close-results"])
    attach_closes(found, deals, open_positions(deals))
    simulator = topology.services["simulator"]
    verdict = judge(found, now=read_at, bound=options.bound, terminal_down=simulator.down)
    result.counts["not executed"] = len(verdict.not_executed)
    result.counts["notice < grace"] = len(verdict.short_notice)
    result.counts["late"] = len(verdict.late)
    result.counts["service crashes"] = sum(s.crashed for s in topology.services.values())
    result.due = verdict.due
    result.liquidations = f"{verdict.due} due of {verdict.total}; {len(verdict.excused)} late with the terminal down"
    result.min_notice = verdict.min_notice
    for kind, triggers in (("not executed", verdict.not_executed), ("notice < grace", verdict.short_notice),
                           ("late", verdict.late)):
        for trigger in triggers[:5]:
            f = found[trigger]
            result.notes.append(f"  {kind}: {f.user_id} warned {_clock(f.warned_at)} deadline {_clock(f.deadline)} "
                                f"closed {_clock(f.last_close)} tickets {sorted(f.tickets)} open {sorted(f.still_open)}"
                                f"; {f.commands} command(s) appended at "
                                f"{', '.join(f'{t - f.deadline:+.1f} s' for t in sorted(f.command_times))} of the "
                                f"deadline, results: {'; '.join(f.outcomes[:3]) or 'none'}"
                                f"; down meanwhile: "
                                f"{_down_between(topology, f.warned_at, f.last_close or f.deadline + options.bound)}")
    crashed = [f"{s.name} x{s.crashed}" for s in topology.services.values() if s.crashed]
    if crashed:
        result.notes.append("  exited by themselves and were restarted: " + ", ".join(crashed))


def _down_between(topology: Topology, start: float, end: float) -> str:
    """The services, the database and the broker that were down at some time from ``start`` to ``end``."""
    found = [f"{s.name} {_clock(a)}-{_clock(b)}" for s in topology.services.values() for a, b in s.down
             if a <= end and (b is None or b >= start)]
    found += [f"{what} {_clock(a)}-{_clock(b)}" for what, a, b in topology.outages if a <= end and b >= start]
    return ", ".join(found) or "nothing"


def _logins(options: Options) -> list[int]:
    from producers.demo.accounts import DEMO_USERS

    return [u.login for u in DEMO_USERS] + [load_login(i) for i in range(options.accounts)]


def _clock(at: float | None) -> str:
    return "-" if at is None else time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def _print(results: list[RoundResult]) -> None:
    table = Table("round", *COUNTED, "liquidations", "min notice s", title="chaos checks after each round: rows now, liquidations and crashes since the start "
                  "(every count must be 0)",
                  width=220)
    for r in results:
        table.add_row(str(r.number), *(str(r.counts.get(k, "?")) for k in COUNTED), r.liquidations,
                      "-" if r.min_notice is None else f"{r.min_notice:.2f}")
    console.print(table)
    for r in results:
        for note in r.notes:
            console.print(note, highlight=False)


@contextlib.contextmanager
def _fake_telegram(accounts: int) -> Iterator[str]:
    """The Bot API stand-in of the tests, in a thread of its own, knowing every user's chat."""
    from producers.demo.accounts import DEMO_USERS
    from producers.demo.remote import LOAD_CHAT_BASE
    from tests.support.fake_telegram import fake_telegram

    chats = {u.telegram_chat_id for u in DEMO_USERS} | {LOAD_CHAT_BASE + i + 1 for i in range(accounts)}
    ready, stop = threading.Event(), threading.Event()
    url: list[str] = []

    async def serve() -> None:
        async with fake_telegram(known_chats=chats) as fake:
            url.append(fake.base_url)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.2)

    thread = threading.Thread(target=lambda: asyncio.run(serve()), name="fake-telegram", daemon=True)
    thread.start()
    ready.wait(30)
    try:
        yield url[0]
    finally:
        stop.set()
        thread.join(timeout=10)
