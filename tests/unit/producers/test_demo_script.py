"""The demo's script on the simulator: every divergence kind really happens in the first two minutes."""

from __future__ import annotations

from producers.demo.accounts import DEMO_USERS, attach, open_accounts
from producers.demo.script import DemoPlatform, default_script
from producers.mt5 import constants as c
from producers.mt5.simulator import SimulatedBroker
from schemas.platform import TradeApproved

USERS = {u.user_id: u for u in DEMO_USERS}


async def play_through() -> tuple[SimulatedBroker, DemoPlatform, list[TradeApproved], dict[str, float]]:
    broker = SimulatedBroker(20_240_108, tick_interval=0.5, sessions=False)
    open_accounts(broker)
    approved: list[TradeApproved] = []
    worst_equity = {u.user_id: u.balance for u in DEMO_USERS}

    async def publish(trade: TradeApproved) -> None:
        approved.append(trade)

    platform = DemoPlatform(broker, users=USERS, gateways={u: attach(broker, USERS[u]) for u in USERS},
                            publish=publish)
    start = broker.now()
    for step in default_script():
        while broker.now() < start + step.at:
            broker.advance(0.5)
            for user in DEMO_USERS:
                equity = broker.account_info(user.login).equity
                worst_equity[user.user_id] = min(worst_equity[user.user_id], equity)
        done = step.act(platform)
        if hasattr(done, "__await__"):
            await done
    broker.advance(5)
    return broker, platform, approved, worst_equity


def closing_deals(broker: SimulatedBroker, user_id: str) -> list[object]:
    return [d for d in broker.deals(USERS[user_id].login) if d.entry == c.DEAL_ENTRY_OUT]


async def test_every_divergence_kind_happens_within_two_minutes() -> None:
    broker, platform, approved, worst = await play_through()
    assert max(s.at for s in default_script()) <= 120
    by_signal = {t.signal_id: t for t in approved}
    assert len(by_signal) == 13 and all(t.mt5_position_id for s, t in by_signal.items() if s != "sig-dave-1")
    assert by_signal["sig-dave-1"].mt5_position_id is None, "missed fill: approved, never placed"

    carol_eurusd = [p for p in broker.account(USERS["u-carol"].login).positions.values() if p.comment == "sig-carol-1"]
    assert carol_eurusd and carol_eurusd[0].price_open - by_signal["sig-carol-1"].entry_price >= 0.0005, "slippage"
    carol_usdjpy = [p for p in broker.account(USERS["u-carol"].login).positions.values() if p.comment == "sig-carol-2"]
    assert carol_usdjpy[0].volume == 0.3 != by_signal["sig-carol-2"].volume, "volume mismatch"
    assert any(p.comment == "by hand" for p in broker.account(USERS["u-bob"].login).positions.values()) or any(
        d.comment == "by hand" for d in broker.deals(USERS["u-bob"].login)), "manual trade"

    alice = closing_deals(broker, "u-alice")
    assert any(d.reason == c.DEAL_REASON_CLIENT and d.volume == 0.4 for d in alice), "partial close"
    gap = [d for d in alice if d.reason == c.DEAL_REASON_SL and d.symbol == "USDJPY"]
    assert gap and gap[0].price < by_signal["sig-alice-3"].stop_loss - 0.1, "closed through the stop (gap)"

    dave_modified = broker.account(USERS["u-dave"].login).positions[platform.tickets["sig-dave-2"]]
    assert dave_modified.sl != by_signal["sig-dave-2"].stop_loss, "SL/TP change"
    carol_xauusd = broker.account(USERS["u-carol"].login).positions[platform.tickets["sig-carol-4"]]
    assert (by_signal["sig-carol-4"].direction.value, carol_xauusd.type) == ("buy", c.POSITION_TYPE_SELL), \
        "direction mismatch"
    assert any(d.reason == c.DEAL_REASON_CLIENT and d.position_id == platform.tickets["sig-bob-1"]
               for d in closing_deals(broker, "u-bob")), "closed by hand, outside the platform"
    assert any(d.reason == c.DEAL_REASON_TP for d in closing_deals(broker, "u-bob")), "broker TP close"
    assert any(d.reason == c.DEAL_REASON_SL for d in closing_deals(broker, "u-carol")), "broker SL close"
    assert any(d.reason == c.DEAL_REASON_SO for d in closing_deals(broker, "u-bob")), "broker stop-out"

    dave = USERS["u-dave"]
    assert (dave.balance - worst["u-dave"]) / dave.balance * 100 > dave.critical_percent, "critical drawdown"


def test_the_demo_guard_keeps_the_demo_market_hours_it_trades_in():
    """The demo's simulated market never closes; the guard's calendar in the demo must agree (a Saturday,
    gold's daily break and Christmas are open), while the production calendar keeps them shut."""
    from datetime import UTC, datetime

    from infra import sessions
    from infra.settings import Settings
    from producers.demo.service import demo_settings

    production = Settings()
    demo = demo_settings(production)
    moments = [datetime(2026, 12, 5, 12, tzinfo=UTC), datetime(2026, 12, 2, 22, 30, tzinfo=UTC),
               datetime(2026, 12, 25, 12, tzinfo=UTC)]
    for at in moments:
        assert sessions.is_open(demo.guard.markets, "XAUUSD", at), at
        assert not sessions.is_open(production.guard.markets, "XAUUSD", at), at
    assert production.guard.markets.classes["metals"].daily_breaks, "the production calendar is unchanged"
