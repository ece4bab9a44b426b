"""Seeded random scenarios and seeded fault plans for the deterministic fault simulation.

``scenario_of(seed)`` writes a random scenario (``simulation.scenario.Scenario``, as a file would):
two or three accounts with their own levels and grace, approvals on a few symbols (some with a
deviation: slippage, another volume, never placed), market moves that take some accounts through
warnings and liquidations, deposits and withdrawals, the platform's own closes.

``plan_of(seed, scenario)`` draws what goes wrong in that run, from a stream of its own (so the
scenario of a seed is the same with and without faults):
- ``WorkerCrash``: the streams worker crashes at ``at``, is down ``downtime`` seconds, and comes back
  with its state from the changelog (``restore``: ``changelog``, every update; ``short``, the last
  update of one table and account missing, as tansu may report a partition's end one record short;
  ``commit``, the state as of
  the last committed offset), and the consumer re-reads the last ``redeliver`` inputs;
- ``ExecutorFault`` on the executor's ``command``-th close command: ``lost_reply`` (the terminal closes,
  its answer to order_send is lost), ``crash`` (the executor dies after trading and before publishing;
  it restarts with its ledger read from close-results and the command is redelivered at once),
  ``result_lost`` (the same, but the command comes back only ``delay`` seconds later: the worker may
  time out and retry first);
- ``TerminalDisconnect``: an account's terminals lose their server (or their process) for a while.

Everything is a pure function of the seed: a failing run is reproduced from its number alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from simulation.scenario import Scenario
from simulation.worker import RULES

SYMBOLS = ("EURUSD", "GBPUSD", "EURGBP", "USDJPY")
DURATION = 90.0  # seconds of market per run
TABLES = tuple(rule.name for rule in RULES)  # the worker's state tables, one changelog each
LAST_APPROVAL = 12.0  # approvals come before any move or fault, so every placed trade has a ticket
Restore = Literal["changelog", "short", "commit"]
ExecutorFaultKind = Literal["lost_reply", "crash", "result_lost"]


@dataclass(frozen=True)
class WorkerCrash:
    at: float  # seconds from the start
    downtime: float  # seconds the worker is away (0: back at once)
    redeliver: int  # inputs after the last committed offset, read again
    restore: Restore
    short: tuple[str, str] = ("", "")  # restore "short": the (table, account) whose last update is missing


@dataclass(frozen=True)
class ExecutorFault:
    command: int  # the executor's n-th close command (0-based, in the order it handles them)
    kind: ExecutorFaultKind
    delay: float = 0.0  # result_lost: seconds until the command is redelivered


@dataclass(frozen=True)
class TerminalDisconnect:
    account: str
    at: float
    duration: float
    kind: Literal["server", "ipc"]


@dataclass(frozen=True)
class FaultPlan:
    crashes: tuple[WorkerCrash, ...] = ()
    executor: tuple[ExecutorFault, ...] = ()
    disconnects: tuple[TerminalDisconnect, ...] = ()

    @property
    def keeps_truth(self) -> bool:
        """Faults of delivery only: the market, the terminals and the worker's clock are as without them
        (no disconnect, no worker downtime, no result redelivered late), so the decisions must agree."""
        return not self.disconnects and all(c.downtime == 0 for c in self.crashes) and \
            all(f.kind != "result_lost" for f in self.executor)

    def describe(self) -> str:
        parts = [f"worker crash at {c.at:g}s ({c.restore}{' ' + '/'.join(c.short) if c.restore == 'short' else ''}, "
                 f"{c.redeliver} redelivered, down {c.downtime:g}s)"
                 for c in self.crashes]
        parts += [f"executor {f.kind} on command {f.command}" + (f" (back after {f.delay:g}s)" if f.delay else "")
                  for f in self.executor]
        parts += [f"{d.account} terminal {d.kind} down at {d.at:g}s for {d.duration:g}s" for d in self.disconnects]
        return "; ".join(parts) or "no faults"


def scenario_of(seed: int) -> Scenario:
    rng = random.Random(f"faultsim/scenario/{seed}")
    accounts = [_account(rng, i) for i in range(rng.randint(2, 3))]
    steps: list[dict[str, Any]] = []
    placed: list[tuple[str, str]] = []
    for account in accounts:
        for n in range(rng.randint(1, 3)):
            approve, is_placed = _approval(rng, account["id"], f"sig-{account['id']}-{n}")
            steps.append({"at": round(rng.uniform(1, LAST_APPROVAL), 1), "approve": approve})
            if is_placed:
                placed.append((account["id"], approve["signal"]))
    for _ in range(rng.randint(1, 3)):
        steps.append({"at": round(rng.uniform(15, 50), 1), "move": {
            "symbol": rng.choice(SYMBOLS), "points": rng.choice((-1, 1)) * rng.randint(100, 700),
            "over": f"{rng.randint(0, 25)}s"}})
    for account_id, signal in rng.sample(placed, min(len(placed), rng.randint(0, 2))):  # against a trade
        approve = next(s["approve"] for s in steps if s.get("approve", {}).get("signal") == signal)
        steps.append({"at": round(rng.uniform(15, 45), 1), "move": {
            "symbol": approve["symbol"], "points": (-1 if approve["direction"] == "buy" else 1) * rng.randint(300, 900),
            "over": f"{rng.randint(0, 20)}s"}})
    for _ in range(rng.randint(0, 2)):
        kind = rng.choice(("deposit", "withdraw"))
        steps.append({"at": round(rng.uniform(20, 70), 1),
                      kind: {"account": rng.choice(accounts)["id"], "amount": rng.choice((300, 1000, 2500))}})
    for account_id, signal in placed:
        if rng.random() < 0.25:
            steps.append({"at": round(rng.uniform(25, 70), 1), "platform_close": {"account": account_id,
                                                                                  "signal": signal}})
    return Scenario.model_validate({
        "name": f"faultsim-{seed}", "description": "a random scenario of `reconguard faultsim`", "seed": seed,
        "duration": DURATION, "accounts": accounts, "steps": sorted(steps, key=lambda s: s["at"])})


def _account(rng: random.Random, i: int) -> dict[str, Any]:
    warning = round(rng.uniform(1.5, 4.0), 1)
    return {"id": f"u-{i}", "currency": rng.choice(("GBP", "USD", "EUR")), "balance": rng.choice((5_000, 10_000, 20_000)),
            "levels": {"warning_drawdown_percent": warning,
                       "critical_drawdown_percent": round(warning + rng.uniform(1.5, 4.0), 1),
                       "daily_loss_limit_percent": rng.choice((4.0, 8.0, 50.0)),
                       "close_grace_seconds": rng.choice((5.0, 8.0, 10.0, 15.0))}}


def _approval(rng: random.Random, account_id: str, signal: str) -> tuple[dict[str, Any], bool]:
    volume = rng.choice((0.5, 1.0, 2.0, 3.0, 5.0))
    approve: dict[str, Any] = {"account": account_id, "signal": signal, "symbol": rng.choice(SYMBOLS),
                               "direction": rng.choice(("buy", "sell")), "volume": volume}
    deviation = rng.random()
    if deviation < 0.08:
        approve["slippage_points"] = rng.randint(5, 40)
    elif deviation < 0.14:
        approve["placed_volume"] = volume * 2
    elif deviation < 0.18:
        approve["placed"] = False
    return approve, approve.get("placed", True)


def plan_of(seed: int, scenario: Scenario) -> FaultPlan:
    """Half the plans are of delivery faults only (``keeps_truth``), so their runs are compared with the
    fault-free run; the other half add worker downtime, late redeliveries and terminal disconnects."""
    rng = random.Random(f"faultsim/faults/{seed}")
    end = scenario.duration or DURATION
    truthful = rng.random() < 0.5
    crashes = tuple(sorted((WorkerCrash(
        at=round(rng.uniform(LAST_APPROVAL, end - 15), 1),
        downtime=0.0 if truthful or rng.random() < 0.3 else round(rng.uniform(0.5, 8.0), 1),
        redeliver=rng.randint(0, 40), restore=rng.choice(("changelog", "short", "commit")),
        short=(rng.choice(TABLES), rng.choice(scenario.accounts).id))
        for _ in range(rng.randint(0, 3))), key=lambda c: c.at))
    kinds = ("lost_reply", "crash") if truthful else ("lost_reply", "crash", "result_lost")
    executor = tuple(ExecutorFault(n, kind, round(rng.uniform(1, 45), 1) if kind == "result_lost" else 0.0)
                     for n in range(4) if rng.random() < 0.5 for kind in [rng.choice(kinds)])
    disconnects = tuple(TerminalDisconnect(rng.choice(scenario.accounts).id,
                                           round(rng.uniform(LAST_APPROVAL + 3, end - 25), 1),
                                           round(rng.uniform(2, 30), 1), rng.choice(("server", "ipc")))
                        for _ in range(0 if truthful or rng.random() < 0.4 else 1))
    return FaultPlan(crashes, executor, disconnects)
