"""End to end on the real broker and Postgres: a platform close the terminal never did, two trades a
second apart on one symbol, and an account locked by a liquidation and unlocked by an admin.

One pipeline (simulated terminals, poller, streams worker, executor, projector) plays the story
below on three of the demo's accounts; the API is served beside it for the lock and the unlock.
- alice: the platform closes two trades; one it really closes, the other it only says it closed
  (and closes it for real later);
- carol: two trades on EURUSD a second apart, orders without identity (no comment, no magic, no
  ticket); the sell fills first while only the buy is known, the buy fills late;
- dave: a 5-lot EURGBP buy gaps 0.3 % down: his drawdown guard liquidates him and locks his
  account; he then opens a position by hand and the platform offers him a signal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from infra.settings import Settings
from producers.demo.accounts import DEMO_USERS
from producers.demo.script import BUY, SELL, DemoPlatform, Step
from producers.demo.service import demo_broker
from producers.mt5 import constants as c
from schemas.topics import ACCOUNT_LOCKS, CLOSE_COMMANDS
from tests.integration.e2e.pipeline import Pipeline
from tests.integration.interfaces.support import People, seed_people, served_api

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]

SEED = 51_515
ALICE, CAROL, DAVE = "u-alice", "u-carol", "u-dave"
LOGIN = {u.user_id: u.login for u in DEMO_USERS}
PLATFORM_CLOSE_TIMEOUT = 4.0


def story() -> list[Step]:
    def dave_by_hand(p: DemoPlatform) -> int:
        return p.broker.manual_open(p.login(DAVE), "GBPUSD", c.ORDER_TYPE_BUY, 0.1, comment="after the lock")

    # fmt: off
    return sorted([
        Step(1, "alice: EURUSD buy placed as approved",
             lambda p: p.approve("sig-r-alice-stuck", ALICE, "EURUSD", BUY, 0.5, sl_points=300, tp_points=600)),
        Step(1, "alice: GBPUSD buy placed as approved",
             lambda p: p.approve("sig-r-alice-done", ALICE, "GBPUSD", BUY, 0.5, sl_points=300, tp_points=600)),
        Step(8, "the platform closes alice's GBPUSD (and it is closed)",
             lambda p: p.close(ALICE, "sig-r-alice-done")),
        Step(8, "the platform says it closed alice's EURUSD, but the order never reaches the terminal",
             lambda p: p.close(ALICE, "sig-r-alice-stuck", execute=False)),
        Step(18, "the platform's close of alice's EURUSD finally gets done",
             lambda p: p.close_on_terminal(ALICE, "sig-r-alice-stuck")),
        Step(1, "carol: EURUSD buy approved; its order is still on its way",
             lambda p: p.approve("sig-r-carol-buy", CAROL, "EURUSD", BUY, 0.1, place=False)),
        Step(2, "carol: an EURUSD sell 0.2 is filled without identity; its approval is published late",
             lambda p: p.approve("sig-r-carol-sell", CAROL, "EURUSD", SELL, 0.2, anonymous=True, announce=False)),
        Step(4, "the sell's approval arrives",
             lambda p: p.announce("sig-r-carol-sell")),
        Step(4, "the buy's order fills, without identity",
             lambda p: p.fill(CAROL, "sig-r-carol-buy")),
        Step(2, "dave: EURGBP buy of 5 lots",
             lambda p: p.approve("sig-r-dave-big", DAVE, "EURGBP", BUY, 5.0)),
        Step(6, "EURGBP gaps 0.3 % down: dave's drawdown passes his critical level at once",
             lambda p: p.broker.gap("EURGBP", -0.3)),
        Step(32, "dave opens a GBPUSD buy by hand on his locked account", dave_by_hand),
        Step(33, "the platform has a signal for dave",
             lambda p: p.approve("sig-r-dave-locked", DAVE, "USDJPY", BUY, 0.1)),
    ], key=lambda s: s.at)
    # fmt: on


@pytest.fixture(scope="module")
def story_settings(settings: Settings) -> Settings:
    guard = settings.guard.model_copy(update={"platform_close_timeout_seconds": PLATFORM_CLOSE_TIMEOUT})
    return settings.model_copy(update={"guard": guard})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline(story_settings: Settings) -> AsyncIterator[Pipeline]:
    running = Pipeline(story_settings, broker=demo_broker(seed=SEED), steps=story())
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


Api = tuple[httpx.Client, People]


@pytest.fixture(scope="module")
def api(story_settings: Settings) -> Iterator[Api]:
    assert story_settings.database_url is not None
    people = asyncio.run(seed_people(story_settings.database_url, tag="lock"))
    with served_api(story_settings) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        yield client, people


def bearer(api: Api, who: str) -> dict[str, str]:
    return api[1].headers(who)


async def rows_of(pipeline: Pipeline, user: str, signal: str) -> list[Any]:
    return await pipeline.rows("SELECT * FROM reconciliation_logs WHERE user_id = $1 AND signal_id = $2 "
                               "ORDER BY created_at, event_type", user, signal)


# --- 4. a platform close that the terminal does not confirm -----------------------------------------


async def test_a_platform_close_never_executed_is_a_divergence_until_it_happens(pipeline: Pipeline) -> None:
    detected = await pipeline.wait_for_rows(
        "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND divergence_reason = 'close_not_executed' "
        "AND event_type = 'DivergenceDetected'", ALICE, what="alice's close_not_executed")
    assert len(detected) == 1 and detected[0]["signal_id"] == "sig-r-alice-stuck"
    assert (detected[0]["matched"], detected[0]["status"]) == (0, "divergence")
    assert "still open" in detected[0]["error_message"]

    resolved = await pipeline.wait_for_rows(
        "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND divergence_reason = 'close_not_executed' "
        "AND event_type = 'DivergenceResolved'", ALICE, what="alice's close_not_executed resolved", timeout=60)
    assert resolved[0]["mt5_position_id"] == detected[0]["mt5_position_id"]
    closed = [r for r in await rows_of(pipeline, ALICE, "sig-r-alice-stuck") if r["close_reason"] == "platform"]
    assert [(r["event_type"], r["status"]) for r in closed] == [("PositionMatched", "matched")]

    done = await rows_of(pipeline, ALICE, "sig-r-alice-done")
    assert [r["close_reason"] for r in done if r["event_type"] == "PositionMatched"] == [None, "platform"]
    assert not any(r["divergence_reason"] == "close_not_executed" for r in done), \
        "a close done within the timeout is no divergence"


# --- 5. two trades a second apart on one symbol -----------------------------------------------------


async def test_two_trades_a_second_apart_on_one_symbol_each_end_bound_to_its_own_position(
    pipeline: Pipeline,
) -> None:
    revised = await pipeline.wait_for_rows(
        "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND event_type = 'BindingRevised'", CAROL,
        what="carol's buy rebound to its own position")
    assert [(r["signal_id"], r["direction"], r["status"]) for r in revised] == [("sig-r-carol-buy", "buy", "matched")]
    assert "(nearby) -> position" in revised[0]["error_message"]
    with pipeline.broker.lock:
        held = {t: p.type for t, p in pipeline.broker.account(LOGIN[CAROL]).positions.items()}
    assert held[revised[0]["mt5_position_id"]] == c.POSITION_TYPE_BUY, "the buy is bound to the buy position"

    mismatch = await pipeline.wait_for_rows(
        "SELECT event_type, signal_id FROM reconciliation_logs WHERE user_id = $1 "
        "AND divergence_reason = 'direction_mismatch' ORDER BY created_at", CAROL, count=2,
        what="the guess's direction mismatch, then its resolution")
    assert [tuple(r) for r in mismatch] == [("DivergenceDetected", "sig-r-carol-buy"),
                                          ("DivergenceResolved", "sig-r-carol-buy")]
    sell = await rows_of(pipeline, CAROL, "sig-r-carol-sell")
    assert {r["mt5_position_id"] for r in sell if r["mt5_position_id"]} <= {
        t for t, kind in held.items() if kind == c.POSITION_TYPE_SELL}, "the sell never took the buy's position"


# --- 6. a lock and an unlock ------------------------------------------------------------------------


async def test_a_liquidation_locks_the_account_until_an_admin_unlocks_it(
    pipeline: Pipeline, api: Api,
) -> None:
    client = api[0]
    locked = await pipeline.wait_for_rows(
        "SELECT * FROM account_lock_events WHERE user_id = $1 AND event_type = 'AccountLocked'", DAVE,
        what="dave's account locked after his liquidation")
    assert (locked[0]["kind"], locked[0]["ends"]) == ("drawdown", "admin_unlock")
    status = client.get(f"/users/{DAVE}/lock", headers=bearer(api, "admin")).json()
    assert status["locked"] is True and status["lock"]["lock_id"] == str(locked[0]["lock_id"])
    assert DAVE in {lock["user_id"] for lock in client.get("/locks", headers=bearer(api, "admin")).json()}

    by_hand = await pipeline.wait_for_rows(
        "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND event_type = 'PositionCloseRecorded' "
        "AND close_reason = 'account_locked'", DAVE, what="dave's position opened by hand closed by the lock")
    assert (by_hand[0]["symbol"], by_hand[0]["status"]) == ("GBPUSD", "success")
    assert by_hand[0]["mt5_position_id"] not in await pipeline.open_tickets(LOGIN[DAVE])
    commands = [e.payload for e in await pipeline.whole_topic(CLOSE_COMMANDS) if e.account_id == DAVE]
    assert [(cmd.reason.value, cmd.symbol) for cmd in commands] == [
        ("drawdown_guard", "EURGBP"), ("account_locked", "GBPUSD")], "no new trigger, no new grace: one close each"
    alerts = await pipeline.rows("SELECT alert_type, action_taken FROM drawdown_alerts WHERE user_id = $1", DAVE)
    assert [tuple(a) for a in alerts] == [("drawdown_critical", "positions_closed")], (
        "one alert, warned then confirmed; the lock's close raises none")
    assert await rows_of(pipeline, DAVE, "sig-r-dave-locked") == [], "the platform approved nothing while locked"

    refused = client.post(f"/users/{DAVE}/unlock", json={"reason": "x"}, headers=bearer(api, "owner"))
    assert refused.status_code == 403, "only an admin unlocks"
    accepted = client.post(f"/users/{DAVE}/unlock", json={"reason": "loss reviewed with dave"},
                           headers=bearer(api, "admin"))
    assert accepted.status_code == 202, accepted.text
    unlocked = await pipeline.wait_for_rows(
        "SELECT * FROM account_lock_events WHERE user_id = $1 AND event_type = 'AccountUnlocked'", DAVE,
        what="dave's unlock recorded")
    assert (unlocked[0]["lock_id"], unlocked[0]["actor"], unlocked[0]["reason"]) == (
        locked[0]["lock_id"], api[1].admin, "loss reviewed with dave")
    assert client.get(f"/users/{DAVE}/lock", headers=bearer(api, "admin")).json()["locked"] is False
    assert client.post(f"/users/{DAVE}/unlock", json={"reason": "again"},
                       headers=bearer(api, "admin")).status_code == 409
    events = [e.event_type for e in await pipeline.whole_topic(ACCOUNT_LOCKS) if e.account_id == DAVE]
    assert events == ["AccountLocked", "AccountUnlocked"], "the platform is told both"

    ticket = pipeline.broker.manual_open(LOGIN[DAVE], "USDJPY", c.ORDER_TYPE_BUY, 0.1, comment="after unlock")
    await pipeline.wait_for_rows(
        "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND mt5_position_id = $2 "
        "AND divergence_reason = 'unexpected'", DAVE, ticket,
        what="the new position seen for unexpected_after_seconds (15 s)", timeout=60)
    assert ticket in await pipeline.open_tickets(LOGIN[DAVE]), "unlocked: a new position stays open"
    commands = [e.payload for e in await pipeline.whole_topic(CLOSE_COMMANDS) if e.account_id == DAVE]
    assert all(ticket not in cmd.tickets for cmd in commands)
