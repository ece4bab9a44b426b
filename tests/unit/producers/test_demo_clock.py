"""The demo's simulated market runs on the true clock."""

from __future__ import annotations

import asyncio
import time

from producers.demo.accounts import DEMO_USERS, deposit
from producers.demo.service import demo_broker, drive_market


async def test_the_demo_market_keeps_the_true_time_however_late_it_starts_moving():
    """The market is made seconds before it is driven (the broker and the database start in between):
    it catches up, so a withdrawal's deal carries the time it happened, not one behind it."""
    broker = demo_broker(start_time=time.time() - 8)
    stop = asyncio.Event()
    driving = asyncio.create_task(drive_market(broker, stop=stop, interval=0.05))
    await asyncio.sleep(0.3)
    ticket = deposit(broker, "u-alice", -100.0)
    stop.set()
    await driving
    deal = next(d for d in broker.deals(next(u.login for u in DEMO_USERS if u.user_id == "u-alice"))
                if d.ticket == ticket)
    offset = broker.server_now() - broker.now()  # UTC+2/UTC+3: the server clock's lead on true UTC
    assert abs(deal.time_msc / 1000 - offset - time.time()) < 1
