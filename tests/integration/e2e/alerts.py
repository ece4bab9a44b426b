"""What every confirmed guard alert must agree with: the close results recorded in reconciliation_logs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from schemas.topics import ALERTS
from tests.integration.e2e.pipeline import Pipeline


async def assert_confirmed_alerts_match_close_records(pipeline: Pipeline) -> int:
    """Each ``positions_closed`` row: its count and realised loss are those of the success rows of the
    tickets its alert confirmed (the alert's last state on the topic names them). Returns how many."""
    rows = await pipeline.rows("SELECT * FROM drawdown_alerts WHERE action_taken = 'positions_closed'")
    latest: dict[Any, Any] = {}
    for event in await pipeline.whole_topic(ALERTS):
        key = event.payload.alert_id or event.event_id
        if key not in latest or event.payload.revision > latest[key].payload.revision:
            latest[key] = event
    for row in rows:
        state = latest[row["id"]].payload
        tickets = [int(t) for t, s in state.details["tickets"].items() if s["status"] == "closed"]
        records = await pipeline.rows(
            "SELECT pnl_gbp FROM reconciliation_logs WHERE user_id = $1 AND event_type = 'PositionCloseRecorded' "
            "AND status = 'success' AND mt5_position_id = ANY($2::bigint[])", row["user_id"], tickets)
        assert row["positions_closed_count"] == len(records) == len(tickets), (row, tickets)
        assert row["total_loss_gbp"] == max(Decimal(0), -sum((r["pnl_gbp"] for r in records), Decimal(0))), row
    return len(rows)
