"""The seeded story the end-to-end tests play on the demo's four accounts, all at once.

Each trader has a part, so the scenarios never disturb each other:
- alice trades cleanly; her terminal loses its trade server for eight polls, and later dies for
  eight more;
- bob trades by hand, is taken out at his take profit, closes one by hand and is stopped out (the
  drawdown guard then closes what he has left);
- carol is filled badly (slippage, short volume) and one approval is never placed; her stop is hit
  while her terminal has lost its trade server;
- dave moves his stops and puts them back, closes part of a trade, is gapped through his stop,
  and is then driven through his critical level, so the drawdown guard liquidates him.

Times are seconds after the demo starts, which is after the pipeline is up. ``Marks`` records
when the steps that matter to a test really ran (wall clock).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from producers.demo.script import BUY, SELL, DemoPlatform, Step
from schemas import utcnow

Marks = dict[str, datetime]

ALICE, BOB, CAROL, DAVE = "u-alice", "u-bob", "u-carol", "u-dave"
EURGBP_FALL_STEPS = 6


def marked(
    marks: Marks, name: str, act: Callable[[DemoPlatform], object]
) -> Callable[[DemoPlatform], object]:
    def run(platform: DemoPlatform) -> object:
        done = act(platform)
        marks[name] = utcnow()
        return done

    return run


def story(marks: Marks) -> list[Step]:
    # fmt: off
    steps = [
        # alice: two clean trades, then two outages
        Step(1, "alice: EURUSD buy placed as approved",
             lambda p: p.approve("sig-e2e-alice-1", ALICE, "EURUSD", BUY, 0.5, sl_points=300, tp_points=600)),
        Step(1, "alice: GBPUSD buy placed as approved",
             lambda p: p.approve("sig-e2e-alice-2", ALICE, "GBPUSD", BUY, 1.0, sl_points=400, tp_points=800)),
        Step(12, "alice's terminal loses its trade server (it runs on, showing what it last saw)",
             marked(marks, "server down", lambda p: p.broker.disconnect(p.login(ALICE), kind="server"))),
        Step(20, "alice's terminal has its trade server back",
             marked(marks, "server up", lambda p: p.broker.reconnect(p.login(ALICE)))),
        Step(24, "alice's terminal process dies (every call fails)",
             marked(marks, "ipc down", lambda p: p.broker.disconnect(p.login(ALICE), kind="ipc"))),
        Step(32, "alice's terminal is restarted",
             marked(marks, "ipc up", lambda p: p.broker.reconnect(p.login(ALICE)))),
        # bob
        Step(1, "bob: XAUUSD bought by hand",
             lambda p: p.manual_open(BOB, "XAUUSD", BUY, 0.1)),
        Step(2, "bob: EURUSD buy with a take profit 4 pips away",
             lambda p: p.approve("sig-e2e-bob-tp", BOB, "EURUSD", BUY, 0.2, sl_points=300, tp_points=40)),
        Step(2, "bob: GBPUSD sell placed as approved",
             lambda p: p.approve("sig-e2e-bob-hand", BOB, "GBPUSD", SELL, 0.3, sl_points=300, tp_points=600)),
        Step(4, "bob: US30 buy of 18 lots, most of his margin",
             lambda p: p.approve("sig-e2e-bob-us30", BOB, "US30", BUY, 18.0, tp_points=100_000)),
        Step(8, "bob closes his GBPUSD sell by hand",
             lambda p: p.broker.manual_close(p.login(BOB), p.tickets["sig-e2e-bob-hand"])),
        Step(10, "the market reaches bob's EURUSD take profit",
             lambda p: p.move_to_stop(BOB, "sig-e2e-bob-tp", "tp")),
        Step(20, "US30 gaps 1.2 % down: bob's margin level falls below stop-out",
             lambda p: p.broker.gap("US30", -1.2)),
        # carol
        Step(2, "carol: EURUSD buy filled 10 pips worse than approved",
             lambda p: p.approve("sig-e2e-carol-slip", CAROL, "EURUSD", BUY, 0.2, sl_points=300, tp_points=600,
                                 entry_off_points=100)),
        Step(2, "carol: USDJPY sell approved for 0.5 lots, placed with 0.3",
             lambda p: p.approve("sig-e2e-carol-vol", CAROL, "USDJPY", SELL, 0.5, sl_points=400, tp_points=800,
                                 place_volume=0.3)),
        Step(2, "carol: USDJPY buy approved, never placed",
             lambda p: p.approve("sig-e2e-carol-miss", CAROL, "USDJPY", BUY, 0.1, sl_points=300, tp_points=600,
                                 place=False)),
        Step(2, "carol: XAUUSD buy approved, placed as a sell",
             lambda p: p.approve("sig-e2e-carol-dir", CAROL, "XAUUSD", BUY, 0.1, place_direction=SELL)),
        Step(3, "carol: GBPUSD sell with a stop 5 pips away",
             lambda p: p.approve("sig-e2e-carol-sl", CAROL, "GBPUSD", SELL, 0.3, sl_points=50, tp_points=600)),
        Step(24, "XAUUSD's spread widens tenfold, beyond its maximum",
             lambda p: p.broker.widen_spread("XAUUSD", 10.0, 30)),
        Step(8, "carol's terminal loses its trade server",
             marked(marks, "carol down", lambda p: p.broker.disconnect(p.login(CAROL), kind="server"))),
        Step(10, "the market reaches carol's GBPUSD stop while her terminal cannot see",
             lambda p: p.move_to_stop(CAROL, "sig-e2e-carol-sl", "sl")),
        Step(14, "carol's terminal has its trade server back",
             marked(marks, "carol up", lambda p: p.broker.reconnect(p.login(CAROL)))),
        # dave
        Step(3, "dave: EURUSD buy placed as approved",
             lambda p: p.approve("sig-e2e-dave-stops", DAVE, "EURUSD", BUY, 0.3, sl_points=300, tp_points=600)),
        Step(3, "dave: GBPUSD buy placed as approved",
             lambda p: p.approve("sig-e2e-dave-part", DAVE, "GBPUSD", BUY, 1.0, sl_points=400, tp_points=800)),
        Step(3, "dave: USDJPY buy with a stop 30 pips away",
             lambda p: p.approve("sig-e2e-dave-gap", DAVE, "USDJPY", BUY, 0.3, sl_points=300, tp_points=1000)),
        Step(8, "dave closes 0.4 of his GBPUSD by hand",
             lambda p: p.partial_close(DAVE, "sig-e2e-dave-part", 0.4)),
        Step(8, "dave moves his EURUSD stop and target by hand",
             lambda p: p.modify(DAVE, "sig-e2e-dave-stops", sl_points=150, tp_points=300)),
        Step(12, "USDJPY gaps 0.5 % down, through dave's stop",
             lambda p: p.broker.gap("USDJPY", -0.5)),
        Step(16, "dave puts his EURUSD stop and target back",
             lambda p: p.modify(DAVE, "sig-e2e-dave-stops", sl_points=300, tp_points=600)),
        Step(18, "dave: EURGBP buy of 5 lots",
             lambda p: p.approve("sig-e2e-dave-eurgbp", DAVE, "EURGBP", BUY, 5.0)),
    ]
    steps += [Step(22 + 1.5 * i, f"EURGBP falls 4 pips ({i + 1}/{EURGBP_FALL_STEPS}): dave's drawdown passes "
                                 "his warning, then his critical level",
                   lambda p: p.step_quote("EURGBP", -40)) for i in range(EURGBP_FALL_STEPS)]
    # fmt: on
    return sorted(steps, key=lambda s: s.at)
