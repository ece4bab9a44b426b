"""End to end on the real broker and the real Postgres: simulated terminals -> poller -> streams worker
-> executor -> projector -> tables.

One pipeline for the module plays the story in ``scenario.py`` on the demo's four accounts at once;
each test waits for the rows its part of the story must leave in Postgres (and, where it matters,
for what the simulated trade server holds afterwards).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio

from infra.settings import Settings
from producers.demo.accounts import DEMO_USERS
from producers.demo.service import demo_broker
from schemas.topics import CLOSE_COMMANDS
from tests.integration.e2e.alerts import assert_confirmed_alerts_match_close_records
from tests.integration.e2e.pipeline import Pipeline
from tests.integration.e2e.scenario import ALICE, BOB, CAROL, DAVE, Marks, story

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

SEED = 40_404
LOGIN = {u.user_id: u.login for u in DEMO_USERS}
GUARD_CLOSE_REASONS = ("drawdown_guard", "daily_loss_guard")
CRITICAL_ALERTS = ("drawdown_critical", "daily_loss_critical")


@pytest.fixture(scope="module")
def marks() -> Marks:
    return {}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipeline(settings: Settings, marks: Marks) -> AsyncIterator[Pipeline]:
    running = Pipeline(settings, broker=demo_broker(seed=SEED), steps=story(marks))
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


# --- 1. every reconciliation outcome, with its reason, matched flag and status ---------------------


def divergence(
    user: str, symbol: str, signal: str | None, reason: str, close_reason: str | None, *, why: str
) -> Any:
    return pytest.param(user, symbol, signal, reason, close_reason, id=f"{reason}: {why}")


# fmt: off
DIVERGENCES = [
    divergence(CAROL, "USDJPY", "sig-e2e-carol-miss", "missing", None,
               why="carol's approved USDJPY buy was never placed"),
    divergence(BOB, "XAUUSD", None, "unexpected", None, why="bob's XAUUSD bought by hand matches no approval"),
    divergence(CAROL, "USDJPY", "sig-e2e-carol-vol", "volume_mismatch", None,
               why="carol's USDJPY approved for 0.5 lots, placed with 0.3"),
    divergence(CAROL, "XAUUSD", "sig-e2e-carol-dir", "direction_mismatch", None,
               why="carol's XAUUSD approved as a buy was placed as a sell"),
    divergence(CAROL, "EURUSD", "sig-e2e-carol-slip", "slippage", None,
               why="carol's EURUSD filled 10 pips from the approved entry"),
    divergence(DAVE, "EURUSD", "sig-e2e-dave-stops", "sl_tp_drift", None,
               why="dave moved his EURUSD stop and target by hand"),
    divergence(DAVE, "GBPUSD", "sig-e2e-dave-part", "partial_close", None,
               why="dave closed 0.4 of his 1.0 GBPUSD by hand"),
    divergence(CAROL, "GBPUSD", "sig-e2e-carol-sl", "closed_outside_platform", "sl",
               why="the broker closed carol's GBPUSD at her stop (close reason sl)"),
    divergence(BOB, "EURUSD", "sig-e2e-bob-tp", "closed_outside_platform", "tp",
               why="the broker closed bob's EURUSD at his target (close reason tp)"),
    divergence(BOB, "US30", "sig-e2e-bob-us30", "closed_outside_platform", "stop_out",
               why="the broker stopped bob out of his US30 (close reason stop_out)"),
    divergence(BOB, "GBPUSD", "sig-e2e-bob-hand", "closed_outside_platform", "manual",
               why="bob closed his GBPUSD by hand (close reason manual)"),
    divergence(DAVE, "USDJPY", "sig-e2e-dave-gap", "gap", "sl",
               why="dave's USDJPY stop was filled 0.3 % beyond it (close reason sl)"),
]
# fmt: on


@pytest.mark.parametrize(("user", "symbol", "signal", "reason", "close_reason"), DIVERGENCES)
async def test_each_divergence_is_logged_once_with_its_reason(
    pipeline: Pipeline,
    user: str,
    symbol: str,
    signal: str | None,
    reason: str,
    close_reason: str | None,
) -> None:
    rows = await pipeline.wait_for_rows(
        "SELECT * FROM reconciliation_logs WHERE event_type = 'DivergenceDetected' AND user_id = $1 "
        "AND symbol = $2 AND divergence_reason = $3",
        user,
        symbol,
        reason,
        what=f"{user}'s {reason} row",
    )

    assert len(rows) == 1, "a divergence is reported when it appears, not at every poll"
    row = rows[0]
    assert (row["matched"], row["status"]) == (0, "divergence")
    assert (row["signal_id"], row["close_reason"]) == (signal, close_reason)
    assert row["mt5_position_id"] is not None or reason == "missing"
    assert row["error_message"], "a divergence says what differs"


async def test_trades_placed_as_approved_are_matched(pipeline: Pipeline) -> None:
    rows = await pipeline.wait_for_rows(
        "SELECT * FROM reconciliation_logs WHERE event_type = 'PositionMatched' AND user_id = $1 ORDER BY signal_id",
        ALICE,
        count=2,
        what="alice's two trades matched",
    )

    assert [r["signal_id"] for r in rows] == ["sig-e2e-alice-1", "sig-e2e-alice-2"]
    assert all((r["matched"], r["status"], r["divergence_reason"]) == (1, "matched", None) for r in rows)
    assert all(r["mt5_position_id"] is not None for r in rows)


async def test_stops_put_back_resolve_the_drift(pipeline: Pipeline) -> None:
    query = (
        "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND approval_id = $2 "
        "AND divergence_reason = 'sl_tp_drift' ORDER BY created_at"
    )
    rows = await pipeline.wait_for_rows(
        query, DAVE, "apr-e2e-dave-stops", count=2, what="dave's drift detected, then resolved"
    )

    detected, resolved = rows
    assert [r["event_type"] for r in rows] == ["DivergenceDetected", "DivergenceResolved"]
    assert (resolved["matched"], resolved["status"]) == (1, "matched")
    assert resolved["mt5_position_id"] == detected["mt5_position_id"]
    assert resolved["created_at"] - detected["created_at"] >= timedelta(seconds=4), (
        "resolved when the stops went back (8 s after they moved), not at the next poll"
    )


async def test_a_resolved_row_names_the_signal_and_symbol_it_resolves(pipeline: Pipeline) -> None:
    (resolved,) = await pipeline.wait_for_rows(
        "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND approval_id = $2 "
        "AND event_type = 'DivergenceResolved'",
        DAVE,
        "apr-e2e-dave-stops",
        what="dave's drift resolved",
    )

    assert (resolved["signal_id"], resolved["symbol"]) == ("sig-e2e-dave-stops", "EURUSD")


# --- 3. a gap through a stop ------------------------------------------------------------------------


async def test_a_stop_filled_beyond_its_level_is_a_gap(pipeline: Pipeline) -> None:
    (row,) = await pipeline.wait_for_rows(
        "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND signal_id = $2 AND event_type = 'DivergenceDetected'",
        DAVE,
        "sig-e2e-dave-gap",
        what="dave's USDJPY stop filled",
    )

    assert (row["divergence_reason"], row["close_reason"], row["direction"]) == ("gap", "sl", "buy")
    beyond = (row["stop_loss"] - row["closed_price"]) / row["stop_loss"] * 100
    assert beyond > Decimal("0.2"), f"a buy stopped {beyond:.3f} % below its stop (tolerance 0.01 %)"
    assert row["pnl_gbp"] < 0


# --- 2. the drawdown guard's liquidation -----------------------------------------------------------


async def test_a_critical_breach_warns_then_closes_every_position_after_the_grace(pipeline: Pipeline) -> None:
    (grace,) = [
        r["close_grace_seconds"]
        for r in await pipeline.rows("SELECT close_grace_seconds FROM users WHERE id = $1", DAVE)
    ]
    alerts_query = (
        "SELECT * FROM drawdown_alerts WHERE user_id = $1 AND alert_type = ANY($2::text[]) "
        "ORDER BY created_at"
    )
    # One row per alert: the warning, then (same row) the liquidation the executor confirmed.
    (closed,) = await pipeline.wait_for(
        lambda: pipeline.rows(alerts_query, DAVE, list(CRITICAL_ALERTS)),
        until=lambda rows: len(rows) == 1 and rows[0]["action_taken"] == "positions_closed",
        what="dave's critical warning, then his liquidation confirmed",
    )
    assert (closed["status"], closed["revision"]) == ("executed", 2), "warning (0), ordered (1), executed (2)"
    waited = (closed["executed_at"] - closed["created_at"]).total_seconds()
    assert grace <= waited < grace + 5, f"closed {waited:.1f} s after the warning; the grace is {grace} s"
    assert closed["positions_closed_count"] > 0 and closed["total_loss_gbp"] >= 0

    records = await pipeline.wait_for_rows(
        "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND event_type = 'PositionCloseRecorded'",
        DAVE,
        count=closed["positions_closed_count"],
        what="a close row per position the guard closed",
    )
    assert len(records) == closed["positions_closed_count"]
    assert {(r["status"], r["matched"]) for r in records} == {("success", 1)}
    assert {r["close_reason"] for r in records} <= set(GUARD_CLOSE_REASONS)
    assert all(r["closed_price"] is not None for r in records)
    await pipeline.wait_for(
        lambda: pipeline.open_tickets(LOGIN[DAVE]),
        until=lambda tickets: tickets == [],
        what="dave's account flat on the trade server",
        timeout=10,
    )


# --- 3. the market guard ---------------------------------------------------------------------------


async def test_a_spread_beyond_its_maximum_closes_the_positions_on_that_symbol(pipeline: Pipeline) -> None:
    (alert,) = await pipeline.wait_for(
        lambda: pipeline.rows("SELECT * FROM drawdown_alerts WHERE user_id = $1 AND alert_type = 'spread'", CAROL),
        until=lambda rows: len(rows) == 1 and rows[0]["status"] != "ordered", what="carol's spread alert, confirmed")
    assert (alert["action_taken"], alert["status"], alert["positions_closed_count"]) == ("positions_closed",
                                                                                         "executed", 1)
    (record,) = await pipeline.wait_for_rows(
        "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND event_type = 'PositionCloseRecorded' "
        "AND close_reason = 'spread'", CAROL, what="the close row of carol's XAUUSD")
    assert (record["symbol"], record["signal_id"], record["status"]) == ("XAUUSD", "sig-e2e-carol-dir", "success")
    await pipeline.wait_for(lambda: pipeline.open_tickets(LOGIN[CAROL]),
                            until=lambda tickets: record["mt5_position_id"] not in tickets,
                            what="carol's XAUUSD closed on the trade server", timeout=10)


# --- 4. a terminal that loses its server, or dies ----------------------------------------------------

OUTAGES = [
    pytest.param("server", id="server: the terminal runs on without its trade server, showing stale data"),
    pytest.param("ipc", id="ipc: the terminal process is gone, every call fails"),
]


@pytest.mark.parametrize("outage", OUTAGES)
async def test_an_outage_makes_the_account_indeterminate_once(
    pipeline: Pipeline, marks: Marks, outage: str
) -> None:
    down, up = await pipeline.wait_for(lambda: _marks_of(marks, outage), what=f"the {outage} outage to end")
    (row,) = await pipeline.wait_for_rows(
        "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND event_type = 'ReconciliationIndeterminate' "
        "AND created_at BETWEEN $2 AND $3",
        ALICE,
        down,
        up,
        what=f"alice indeterminate in the {outage} outage",
    )

    assert (row["matched"], row["status"], row["divergence_reason"]) == (2, "failed", None)
    assert row["error_message"], "says which call failed and why"
    snapshots = await pipeline.rows(
        "SELECT sync_error FROM position_snapshots WHERE user_id = $1 "
        "AND created_at BETWEEN $2 AND $3 AND sync_error IS NOT NULL",
        ALICE,
        down,
        up,
    )
    assert len(snapshots) == 1, "the snapshot shows the sync error, once per outage"


async def test_a_stop_hit_while_the_terminal_was_blind_is_judged_by_its_deal(
    pipeline: Pipeline, marks: Marks
) -> None:
    query = "SELECT * FROM reconciliation_logs WHERE user_id = $1 AND signal_id = $2 AND matched = 0"
    (row,) = await pipeline.wait_for_rows(
        query, CAROL, "sig-e2e-carol-sl", what="carol's stopped GBPUSD judged"
    )

    assert (row["divergence_reason"], row["close_reason"]) == ("closed_outside_platform", "sl"), "not missing"
    assert row["created_at"] >= marks["carol up"], "concluded from the first good report after the outage"
    assert abs(row["closed_price"] - row["stop_loss"]) <= row["stop_loss"] * Decimal("0.0001"), (
        "filled at its stop"
    )


async def test_outages_are_never_read_as_divergence_or_closed(pipeline: Pipeline, marks: Marks) -> None:
    _, up = await pipeline.wait_for(lambda: _marks_of(marks, "ipc"), what="the last outage to end")
    await pipeline.wait_for_rows(
        "SELECT id FROM position_snapshots WHERE user_id = $1 AND sync_error IS NULL AND last_sync_at > $2",
        ALICE,
        up + timedelta(seconds=3),
        what="alice's terminal read again after the outages",
    )

    judged = await pipeline.rows(
        "SELECT event_type, divergence_reason FROM reconciliation_logs WHERE user_id = $1 AND matched = 0",
        ALICE,
    )
    assert judged == [], "no position was judged missing or closed while the terminal could not see"
    commands = [c for c in await pipeline.whole_topic(CLOSE_COMMANDS) if c.account_id == ALICE]
    assert commands == [], "nothing is closed because a terminal went quiet"
    assert await pipeline.rows("SELECT id FROM drawdown_alerts WHERE user_id = $1", ALICE) == []
    assert len(await pipeline.open_tickets(LOGIN[ALICE])) == 2, "her trades are still open"


async def _marks_of(marks: Marks, outage: str) -> tuple[datetime, datetime] | None:
    down, up = marks.get(f"{outage} down"), marks.get(f"{outage} up")
    return (down, up) if down and up else None


# --- 5. what the alerts say is what the terminal confirmed ------------------------------------------------


async def test_every_confirmed_alert_equals_its_close_results(pipeline: Pipeline) -> None:
    await pipeline.wait_for(
        lambda: pipeline.rows(UNSETTLED_GUARD_ALERTS), until=lambda rows: rows == [],
        what="every guard alert settled (confirmed, failed or superseded)")
    assert await assert_confirmed_alerts_match_close_records(pipeline) >= 2, "dave's liquidation, carol's spread"


#: A guard trigger still between its warning and the executor's answers.
UNSETTLED_GUARD_ALERTS = ("SELECT id FROM drawdown_alerts WHERE alert_type <> 'drawdown_warning' "
                          "AND status IN ('open', 'ordered')")
