"""Builders of realistic events for tests and benchmarks (valid by construction)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from infra.dburl import plain_url
from schemas import Envelope, observed
from schemas.common import Direction
from schemas.decisions import (
    AccountAssessed,
    ActionTaken,
    AlertType,
    DivergenceDetected,
    DivergenceReason,
    GuardAlertRaised,
    Matched,
    PositionMatched,
    ReconciliationStatus,
)

EPOCH = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def snapshot(user_id: str, *, equity: float, peak: float, at: datetime) -> Envelope[AccountAssessed]:
    drawdown = max(0.0, (peak - equity) / peak * 100)
    payload = AccountAssessed(
        user_id=user_id, equity_gbp=equity, balance_gbp=peak, peak_equity_gbp=peak, drawdown_percent=drawdown,
        open_positions_count=2, total_volume_lots=0.3, open_pnl_gbp=equity - peak, margin_used_percent=12.5,
        last_sync_at=at)
    return observed(payload, account_id=user_id, occurred_at=at)


def alert(user_id: str, *, at: datetime, action: ActionTaken = ActionTaken.WARNING_SENT) -> Envelope[GuardAlertRaised]:
    payload = GuardAlertRaised(
        user_id=user_id, alert_type=AlertType.DRAWDOWN_CRITICAL, action_taken=action, status="open",
        message="drawdown 10.4% beyond 10.0%: positions close in 10 s", drawdown_percent=10.4, equity_gbp=8960.0,
        threshold_percent=10.0)
    return observed(payload, account_id=user_id, occurred_at=at)


def reconciliation(user_id: str, *, at: datetime, ticket: int, diverged: bool) -> Envelope[Any]:
    common: dict[str, Any] = dict(
        user_id=user_id, signal_id=f"sig-{ticket}", approval_id=f"apr-{ticket}", mt5_position_id=ticket,
        symbol="EURUSD", direction=Direction.BUY, volume=0.1, entry_price=1.08412, current_price=1.08455,
        stop_loss=1.08, take_profit=1.09)
    if diverged:
        payload: Any = DivergenceDetected(
            **common, matched=Matched.DIVERGENCE, status=ReconciliationStatus.DIVERGENCE,
            divergence_reason=DivergenceReason.VOLUME_MISMATCH, error_message="expected 0.10 lots, found 0.05")
    else:
        payload = PositionMatched(**common, matched=Matched.MATCHED, status=ReconciliationStatus.MATCHED)
    return observed(payload, account_id=user_id, occurred_at=at)


def mixed_events(users: list[str], count: int, *, seed: int = 7) -> list[Envelope[Any]]:
    """``count`` events across the three projected kinds, in time order."""
    rng = random.Random(seed)
    events: list[Envelope[Any]] = []
    for i in range(count):
        user, at = users[i % len(users)], EPOCH + timedelta(milliseconds=i)
        kind = rng.random()
        if kind < 0.6:
            events.append(snapshot(user, equity=10_000 - rng.random() * 900, peak=10_000, at=at))
        elif kind < 0.9:
            events.append(reconciliation(user, at=at, ticket=100_000 + i, diverged=rng.random() < 0.3))
        else:
            events.append(alert(user, at=at))
    return events


async def add_users(database_url: str, *user_ids: str, role: str = "trader") -> None:
    connection = await asyncpg.connect(plain_url(database_url))
    try:
        await connection.executemany(
            "INSERT INTO users (id, display_name, role) VALUES ($1, $1, $2) ON CONFLICT (id) DO NOTHING",
            [(u, role) for u in user_ids])
    finally:
        await connection.close()
