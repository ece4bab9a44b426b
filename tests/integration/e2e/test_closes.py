"""Guard closes recorded once, and as they truly happened, end to end on the real broker and Postgres:
simulated terminals -> poller -> streams worker -> executor -> projector -> tables, and the Telegram
relay against the local Bot API server.

Each demo account plays one part, one after another (the simulator's faults are broker-wide):
- alice holds gold when it gaps: the market guard and the drawdown guard close the same position
  within a second; one close, one success, no failure row, no failure message;
- bob's liquidation is refused by the trade server (no prices) until it comes back: the alert
  says failed, the retry closes the position, the alert says what the retry confirmed;
- carol's liquidation is refused, then her stop closes the position (through the stop): the close
  is recorded with its reason and the gap, and the alert ends without a failure left standing.
Finally every ``positions_closed`` row's count and loss equal its close results' rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import asyncpg
import pytest
import pytest_asyncio

from infra.dburl import plain_url
from infra.settings import Settings, TelegramSettings
from producers.demo.accounts import DEMO_USERS, upsert_users
from producers.demo.script import BUY, SELL, DemoPlatform, Step
from producers.demo.service import demo_broker
from reconguard.telegram.service import serve as serve_telegram
from schemas.topics import CLOSE_RESULTS
from tests.integration.e2e.alerts import assert_confirmed_alerts_match_close_records
from tests.integration.e2e.pipeline import Pipeline
from tests.integration.e2e.scenario import ALICE, BOB, CAROL
from tests.support.fake_telegram import FakeTelegram, fake_telegram

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

CHAT = {u.user_id: u.telegram_chat_id for u in DEMO_USERS}
#: Levels of this module's accounts: no grace (so both guards act on one poll) and carol's a tight one.
LEVELS = {ALICE: (5.0, 10.0, 50.0), BOB: (5.0, 10.0, 50.0), CAROL: (1.0, 2.0, 50.0)}
FAILURE_WORDS = ("Close failed", "Liquidation failed", "could not close")


class Stage:
    """The pipeline, the demo platform (handed over by the script's only step) and the fake Telegram."""

    def __init__(self, pipeline: Pipeline, telegram: FakeTelegram) -> None:
        self.pipeline, self.telegram = pipeline, telegram
        self.platforms: list[DemoPlatform] = []

    @property
    def platform(self) -> DemoPlatform:
        assert self.platforms, "the demo platform has not started"
        return self.platforms[0]

    async def alert_rows(self, user: str) -> list[asyncpg.Record]:
        return await self.pipeline.rows("SELECT * FROM drawdown_alerts WHERE user_id = $1 ORDER BY created_at", user)

    async def close_rows(self, user: str) -> list[asyncpg.Record]:
        return await self.pipeline.rows(
            "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND event_type = 'PositionCloseRecorded' "
            "ORDER BY created_at", user)

    async def wait_for_alert(self, user: str, status: str, *, what: str) -> asyncpg.Record:
        rows = await self.pipeline.wait_for(lambda: self.alert_rows(user), what=what, timeout=60,
                                            until=lambda rows: any(r["status"] == status for r in rows))
        return next(r for r in rows if r["status"] == status)


def guarded(settings: Settings) -> Settings:
    guard = settings.guard.model_copy(update={"confirmations": 1, "liquidation_retry_seconds": 2.0,
                                              "liquidation_escalated_retry_seconds": 5.0})
    return settings.model_copy(update={"guard": guard})


async def set_levels(settings: Settings, server: str) -> None:
    assert settings.database_url is not None
    await upsert_users(settings.database_url, server=server)  # a rerun of the demo keeps these edits
    connection = await asyncpg.connect(plain_url(settings.database_url))
    try:
        for user, (warning, critical, daily) in LEVELS.items():
            await connection.execute(
                "UPDATE users SET warning_drawdown_percent = $2, critical_drawdown_percent = $3, "
                "daily_loss_limit_percent = $4, close_grace_seconds = 0 WHERE id = $1", user, warning, critical, daily)
    finally:
        await connection.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stage(settings: Settings) -> AsyncIterator[Stage]:
    settings = guarded(settings)
    broker = demo_broker(seed=11_011)
    await set_levels(settings, broker.server)
    platforms: list[DemoPlatform] = []
    pipeline = Pipeline(settings, broker=broker, steps=[Step(0, "hand the platform to the test", platforms.append)])
    stop = asyncio.Event()
    async with fake_telegram(known_chats=set(CHAT.values())) as telegram:
        relay = asyncio.create_task(serve_telegram(settings.model_copy(update={"telegram": TelegramSettings(
            TELEGRAM_BOT_TOKEN="123456:TEST-token", api_base=telegram.base_url, backoff_initial_seconds=0.05,
            backoff_max_seconds=0.4, polling_timeout_seconds=1, consumer_group="closes-telegram")}), stop=stop))
        try:
            await pipeline.start()
            running = Stage(pipeline, telegram)
            running.platforms = platforms
            await pipeline.wait_for(lambda: _ready(platforms), what="the demo platform", timeout=30)
            yield running
        finally:
            stop.set()
            await pipeline.stop()
            await asyncio.wait_for(relay, timeout=30)


async def _ready(platforms: list[DemoPlatform]) -> bool:
    return bool(platforms)


async def held_in_a_report(stage: Stage, user: str, ticket: int) -> None:
    """Wait until the poller has reported the position (so the guards know it)."""
    await stage.pipeline.wait_for_rows(
        "SELECT id FROM position_snapshots WHERE user_id = $1 AND open_positions_count > 0", user,
        what=f"{user}'s position {ticket} in a snapshot", timeout=30)


# --- the market guard and the drawdown guard, one position ---------------------------------------------------


async def test_two_guards_closing_one_position_make_one_close_and_no_failure(stage: Stage) -> None:
    platform, broker = stage.platform, stage.platform.broker
    ticket = platform.manual_open(ALICE, "XAUUSD", BUY, 0.5)
    await held_in_a_report(stage, ALICE, ticket)
    broker.gap("XAUUSD", -2.0)  # beyond XAUUSD's 1.5 % gap, and a 16 % drawdown for alice
    rows = await stage.pipeline.wait_for(
        lambda: stage.alert_rows(ALICE), what="both guards' alerts, settled", timeout=60,
        until=lambda rows: len(rows) >= 2 and all(r["status"] in ("executed", "superseded") for r in rows))
    assert {r["alert_type"] for r in rows} == {"market_gap", "drawdown_critical"}
    executed = [r for r in rows if r["status"] == "executed"]
    assert len(executed) == 1 and executed[0]["positions_closed_count"] == 1, "one success"
    assert [r["status"] for r in rows if r["status"] != "executed"] == ["superseded"], "the other: done by it"
    records = await stage.close_rows(ALICE)
    assert [(r["mt5_position_id"], r["status"]) for r in records] == [(ticket, "success")], \
        "one close, no failure row"
    results = [e for e in await stage.pipeline.whole_topic(CLOSE_RESULTS) if e.payload.ticket == ticket]
    assert sorted(e.event_type for e in results) == ["PositionCloseSuperseded", "PositionClosed"]
    assert executed[0]["total_loss_gbp"] == max(Decimal(0), -records[0]["pnl_gbp"])
    # Each guard's first word, the lock the liquidation puts on the account, and the confirmation, in
    # no set order: wait for the confirmation itself.
    texts = await _telegram_texts(stage, ALICE, until=lambda found: any("Positions closed" in t for t in found))
    assert not [t for t in texts if any(word in t for word in FAILURE_WORDS)], "no failure message"
    assert sum("Positions closed" in t for t in texts) == 1


async def _telegram_texts(stage: Stage, user: str, *, count: int = 1,
                          until: Callable[[list[str]], bool] | None = None) -> list[str]:
    """The Telegram messages to ``user`` once there are ``count`` of them (or once ``until`` holds)."""
    async def texts() -> list[str]:
        return stage.telegram.texts_to(CHAT[user])

    found = await stage.pipeline.wait_for(texts, until=until or (lambda t: len(t) >= count), timeout=40,
                                          what=f"Telegram messages to {user}")
    return found


# --- a refused liquidation, retried -------------------------------------------------------------------------


async def test_a_liquidation_refused_at_first_is_retried_and_confirmed(stage: Stage) -> None:
    platform, broker = stage.platform, stage.platform.broker
    ticket = platform.manual_open(BOB, "EURUSD", BUY, 3.0)
    await held_in_a_report(stage, BOB, ticket)
    broker.set_faults(price_off_probability=1.0)  # the trade server has no prices: every close is refused
    try:
        platform.step_quote("EURUSD", -450)  # 0.4 %: a 13 % drawdown, no gap for the market guard
        failed = await stage.wait_for_alert(BOB, "failed", what="bob's liquidation refused")
        assert (failed["action_taken"], failed["positions_closed_count"]) == ("failed", 0)
    finally:
        broker.set_faults(price_off_probability=0.0)
    executed = await stage.wait_for_alert(BOB, "executed", what="bob's liquidation retried and confirmed")
    records = await stage.close_rows(BOB)
    assert next(r["status"] for r in records if r["mt5_position_id"] == ticket) == "failed", "the refusal is on record"
    (success,) = [r for r in records if r["status"] == "success"]
    assert (executed["action_taken"], executed["positions_closed_count"]) == ("positions_closed", 1)
    assert executed["total_loss_gbp"] == max(Decimal(0), -success["pnl_gbp"])
    assert executed["executed_at"] is not None and executed["executed_at"] >= failed["updated_at"]
    assert await stage.pipeline.open_tickets(DEMO_LOGIN[BOB]) == []
    texts = await _telegram_texts(stage, BOB, count=4)
    titles = [t.split("</b>", 1)[0] for t in texts]
    assert [t for t in titles if "Account locked" not in t] == [
        "<b>🛑 Drawdown limit breached", "<b>❌ Close failed · Drawdown limit breached",
        "<b>✅ Positions closed · Drawdown limit breached"], "warning, failed, confirmed: one message each"
    assert titles.count("<b>🔒 Account locked") == 1, "and one for the lock the liquidation put on the account"


# --- a stop after a failed guard close ----------------------------------------------------------------------


async def test_a_stop_after_a_failed_guard_close_is_recorded_with_its_reason_and_gap(stage: Stage) -> None:
    platform, broker = stage.platform, stage.platform.broker
    signal = await platform.approve("sig-closes-carol", CAROL, "GBPUSD", SELL, 1.0, sl_points=400, tp_points=800)
    ticket = platform.tickets[signal]
    await held_in_a_report(stage, CAROL, ticket)
    broker.set_faults(price_off_probability=1.0)
    try:
        platform.step_quote("GBPUSD", 300)  # against the sell: about 2.5 % of carol's equity, her level is 2 %
        await stage.wait_for_alert(CAROL, "failed", what="carol's liquidation refused")
        platform.step_quote("GBPUSD", 300)  # through her stop, 100 points beyond it
    finally:
        broker.set_faults(price_off_probability=0.0)
    (stopped,) = await stage.pipeline.wait_for_rows(
        "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND mt5_position_id = $2 "
        "AND event_type = 'DivergenceDetected' AND close_reason = 'sl'", CAROL, ticket,
        what="carol's stop close recorded")
    assert (stopped["divergence_reason"], stopped["signal_id"]) == ("gap", signal), "through the stop: a gap"
    ended = await stage.wait_for_alert(CAROL, "superseded", what="carol's alert ended by the stop")
    assert (ended["action_taken"], ended["positions_closed_count"]) == ("warning_sent", 0)
    assert await stage.pipeline.open_tickets(DEMO_LOGIN[CAROL]) == []


# --- every confirmed liquidation's numbers ------------------------------------------------------------------


async def test_every_positions_closed_row_equals_the_sum_of_its_close_results(stage: Stage) -> None:
    assert await assert_confirmed_alerts_match_close_records(stage.pipeline) == 2, "alice's and bob's"


DEMO_LOGIN = {u.user_id: u.login for u in DEMO_USERS}
