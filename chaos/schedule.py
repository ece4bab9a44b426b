"""The seeded plan of a round: which fault when, for how long, and which accounts are driven to a
liquidation. Pure: the same seed and round number give the same plan."""

from __future__ import annotations

import random
from dataclasses import dataclass

KILLS = tuple(f"kill {name}" for name in ("simulator", "poller", "worker", "executor", "projector", "api",
                                          "telegram"))
FAULTS = (*KILLS, "database killed", "database frozen", "broker cut")


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the round starts
    kind: str
    duration: float  # how long the database stays down or frozen, or the broker cut


@dataclass(frozen=True)
class RoundPlan:
    number: int
    faults: tuple[Fault, ...]
    liquidated: tuple[int, ...]  # indexes of load accounts driven through their critical level


def plan_round(seed: int, number: int, *, seconds: float, load_accounts: int, per_round: int = 3,
               kinds: tuple[str, ...] = FAULTS) -> RoundPlan:
    """Every kind of fault once, in a seeded order, spread over the round's first three quarters."""
    rng = random.Random(f"chaos:{seed}:{number}")
    order = list(kinds)
    rng.shuffle(order)
    span = seconds * 0.75
    slot = span / len(order)
    faults = tuple(Fault(round(5 + i * slot + rng.uniform(0, slot / 2), 2), kind, round(rng.uniform(2.0, 6.0), 2))
                   for i, kind in enumerate(order))
    accounts = list(range(load_accounts))
    random.Random(f"chaos:{seed}:accounts").shuffle(accounts)
    start = (number - 1) * per_round
    return RoundPlan(number, faults, tuple(accounts[start:start + per_round]))


def restart_delays(seed: int) -> random.Random:
    """The orchestrator's restart delays (0.5-2 s, like a restart policy's backoff), seeded too."""
    return random.Random(f"chaos:{seed}:restarts")
