"""What each kind of scenario step does to the simulated world (see ``docs/scenarios.md``).

The platform's and the traders' actions go through the demo platform (``producers/demo/script.py``),
which places orders on a terminal as a platform would and publishes its approvals; the market's and
the faults' act on the simulated broker; the worker's restart and an admin's unlock on the worker.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from producers.demo.accounts import deposit
from schemas import observed
from schemas.envelope import DERIVED_ID_NAMESPACE
from schemas.locks import UnlockAccount
from simulation.scenario import Move


async def act(sim: Any, step: Any, index: int) -> None:
    name, action = step.action
    await ACTIONS[name](sim, action, index)


async def approve(sim: Any, a: Any, index: int) -> None:
    await sim.platform.approve(a.signal, a.account, a.symbol, a.direction, a.volume, sl_points=a.sl_points,
                               tp_points=a.tp_points, entry_off_points=a.slippage_points,
                               place_volume=a.placed_volume, place_direction=a.placed_direction, place=a.placed,
                               anonymous=a.anonymous)


async def platform_close(sim: Any, a: Any, index: int) -> None:
    await sim.platform.close(a.account, a.signal, execute=a.execute)


async def manual_open(sim: Any, a: Any, index: int) -> None:
    ticket = sim.platform.manual_open(a.account, a.symbol, a.direction, a.volume)
    if a.name:
        sim.platform.tickets[a.name] = ticket


async def manual_close(sim: Any, a: Any, index: int) -> None:
    sim.broker.manual_close(sim.platform.login(a.account), sim.platform.tickets[a.signal], a.volume)


async def modify(sim: Any, a: Any, index: int) -> None:
    sim.platform.modify(a.account, a.signal, sl_points=a.sl_points, tp_points=a.tp_points)


async def touch(sim: Any, a: Any, index: int) -> None:
    sim.platform.move_to_stop(a.account, a.signal, a.level)


async def money(kind: str, sim: Any, a: Any) -> None:
    login = sim.platform.login(a.account)
    if kind == "credit":
        sim.broker.credit(login, a.amount)
    else:
        deposit(sim.broker, a.account, a.amount if kind == "deposit" else -a.amount,
                users=tuple(sim.platform.users.values()))


async def quote(sim: Any, a: Any, index: int) -> None:
    sim.broker.set_quote(a.symbol, a.bid, a.ask)


async def move(sim: Any, a: Move, index: int) -> None:
    sim.moves.append((a, sim.now, sim.now + timedelta(seconds=a.over), [0.0]))
    apply_move(sim, sim.moves[-1], sim.now)


def apply_move(sim: Any, entry: tuple[Move, datetime, datetime, list[float]], t: datetime) -> None:
    """Apply the part of a move due by ``t`` (all of it once its duration is over)."""
    a, start, end, applied = entry
    span = (end - start).total_seconds()
    done = 1.0 if span <= 0 or t >= end else max(0.0, (t - start).total_seconds() / span)
    if a.points is not None:
        due = round(a.points * done) - applied[0]
        if due:
            sim.platform.step_quote(a.symbol, int(due))
    else:
        assert a.percent is not None
        target = (1 + a.percent / 100) ** done
        due = (target / (1 + applied[0]) - 1) * 100
        if abs(due) > 1e-12:
            sim.broker.gap(a.symbol, due)
        applied[0] = target - 1
        return
    applied[0] += due


async def gap(sim: Any, a: Any, index: int) -> None:
    sim.broker.gap(a.symbol, a.percent)


async def spread(sim: Any, a: Any, index: int) -> None:
    sim.broker.widen_spread(a.symbol, a.factor, a.ticks)


async def freeze(sim: Any, a: Any, index: int) -> None:
    """The symbol's feed stops (no tick, no price change) for the duration; the terminal stays connected."""
    market = sim.broker.market.symbols[a.symbol]
    market.step = lambda *args, **kwargs: False  # this instance only: its price path pauses

    def thaw() -> None:
        del market.step

    sim.releases.append((sim.now + timedelta(seconds=a.duration), index, thaw))


async def disconnect(sim: Any, a: Any, index: int) -> None:
    login = sim.platform.login(a.account)
    sim.broker.disconnect(login, kind=a.kind)
    sim.releases.append((sim.now + timedelta(seconds=a.duration), index, lambda: sim.broker.reconnect(login)))


async def wrong_equity(sim: Any, a: Any, index: int) -> None:
    sim.accounts[a.account].glitch["equity"] = a.equity


async def bad_rate(sim: Any, a: Any, index: int) -> None:
    sim.accounts[a.account].glitch["gbp_rate"] = a.gbp_rate


async def unlock(sim: Any, a: Any, index: int) -> None:
    if not sim.observes(a.account):  # a shard's other accounts: their own shard logs and guards them
        return
    event_id = uuid.uuid5(DERIVED_ID_NAMESPACE, f"scenario/{sim.seed}/{a.account}/unlock/{index}")
    event = observed(UnlockAccount(user_id=a.account, requested_by=a.by, reason=a.reason), account_id=a.account,
                     occurred_at=sim.now, event_id=event_id)
    sim.log(event, {"id": str(event_id), "payload": event.payload.model_dump(mode="json")})
    await sim.take(sim.worker.process(event, sim.now))


async def restart_worker(sim: Any, a: Any, index: int) -> None:
    sim.worker.restart()


ACTIONS = {
    "approve": approve, "platform_close": platform_close, "manual_open": manual_open, "manual_close": manual_close,
    "modify": modify, "touch": touch, "quote": quote, "move": move, "gap": gap, "spread": spread, "freeze": freeze,
    "disconnect": disconnect, "wrong_equity": wrong_equity, "bad_rate": bad_rate, "unlock": unlock,
    "restart_worker": restart_worker,
    "deposit": lambda sim, a, i: money("deposit", sim, a), "withdraw": lambda sim, a, i: money("withdraw", sim, a),
    "credit": lambda sim, a, i: money("credit", sim, a),
}
