"""Pure mapping from an event to the row it becomes. No I/O here.

Every timestamp in a row comes from the event (``occurred_at``), never from the clock of the
projector, so replaying the log gives byte-identical tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from infra.partitions import SNAPSHOTS, TimePartitioning
from schemas import Envelope, Topic
from schemas.decisions import AccountAssessed, GuardAlertRaised, ReconciliationRecord
from schemas.locks import AccountLocked, AccountUnlocked
from schemas.topics import ACCOUNT_LOCKS, ACCOUNT_STATE, ALERTS, RECONCILIATION


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[str, ...]
    #: Columns a later state of the same row updates, when its ``revision`` is higher (empty: insert only).
    updates: tuple[str, ...] = ()
    #: The table's time partitions (made before rows go in) and the unique key a redelivery hits.
    partitioning: TimePartitioning | None = None
    key: tuple[str, ...] = ("id",)


RECONCILIATION_LOGS = TableSpec("reconciliation_logs", (
    "id", "user_id", "signal_id", "approval_id", "mt5_position_id", "symbol", "direction", "volume",
    "entry_price", "current_price", "take_profit", "stop_loss", "matched", "divergence_reason",
    "close_reason", "closed_price", "pnl_gbp", "pnl_percent", "event_type", "status", "error_message",
    "created_at", "updated_at",
))
POSITION_SNAPSHOTS = TableSpec("position_snapshots", (
    "id", "user_id", "equity_gbp", "balance_gbp", "peak_equity_gbp", "drawdown_percent",
    "open_positions_count", "total_volume_lots", "open_pnl_gbp", "margin_used_percent", "last_sync_at",
    "sync_error", "created_at",
), partitioning=SNAPSHOTS, key=("id", "created_at"))
DRAWDOWN_ALERTS = TableSpec("drawdown_alerts", (
    "id", "user_id", "alert_type", "drawdown_percent", "equity_gbp", "threshold_percent",
    "positions_closed_count", "total_loss_gbp", "action_taken", "status", "created_at", "executed_at",
    "revision", "updated_at",
), updates=("positions_closed_count", "total_loss_gbp", "action_taken", "status", "executed_at", "revision",
            "updated_at"))

ACCOUNT_LOCK_EVENTS = TableSpec("account_lock_events", (
    "id", "user_id", "event_type", "lock_id", "kind", "ends", "actor", "reason", "created_at",
))

#: Which table each projected topic feeds.
TABLE_OF_TOPIC: dict[Topic, TableSpec] = {
    RECONCILIATION: RECONCILIATION_LOGS,
    ACCOUNT_STATE: POSITION_SNAPSHOTS,
    ALERTS: DRAWDOWN_ALERTS,
    ACCOUNT_LOCKS: ACCOUNT_LOCK_EVENTS,
}
PROJECTED_TOPICS: tuple[Topic, ...] = tuple(TABLE_OF_TOPIC)


def _dec(value: float | None, places: int) -> Decimal | None:
    """Money and prices as exact decimals, rounded once, here, to the column's scale."""
    if value is None:
        return None
    return Decimal(f"{value:.{places}f}")  # the float's exact value, correctly rounded


def _zero_if_none(value: Decimal | None) -> Decimal:
    return Decimal(0) if value is None else value


def reconciliation_row(envelope: Envelope[ReconciliationRecord]) -> tuple[Any, ...]:
    p = envelope.payload
    return (
        envelope.event_id, p.user_id, p.signal_id, p.approval_id, p.mt5_position_id, p.symbol,
        p.direction.value if p.direction else None, _zero_if_none(_dec(p.volume, 4)),
        _dec(p.entry_price, 8), _dec(p.current_price, 8), _dec(p.take_profit, 8), _dec(p.stop_loss, 8),
        int(p.matched), p.divergence_reason.value if p.divergence_reason else None,
        p.close_reason.value if p.close_reason else None, _dec(p.closed_price, 8),
        _zero_if_none(_dec(p.pnl_gbp, 4)), _zero_if_none(_dec(p.pnl_percent, 4)), envelope.event_type,
        p.status.value, p.error_message, envelope.occurred_at, envelope.occurred_at,
    )


def snapshot_row(envelope: Envelope[AccountAssessed]) -> tuple[Any, ...]:
    p = envelope.payload
    return (
        envelope.event_id, p.user_id, _dec(p.equity_gbp, 4), _dec(p.balance_gbp, 4), _dec(p.peak_equity_gbp, 4),
        _dec(p.drawdown_percent, 4), p.open_positions_count, _dec(p.total_volume_lots, 4),
        _dec(p.open_pnl_gbp, 4), _dec(p.margin_used_percent, 4), p.last_sync_at, p.sync_error,
        envelope.occurred_at,
    )


def alert_row(envelope: Envelope[GuardAlertRaised]) -> tuple[Any, ...]:
    """One row per alert (``alert_id``); each later state of it carries a higher revision and updates it."""
    p = envelope.payload
    return (
        p.alert_id or envelope.event_id, p.user_id, p.alert_type.value, _zero_if_none(_dec(p.drawdown_percent, 4)),
        _zero_if_none(_dec(p.equity_gbp, 4)), _zero_if_none(_dec(p.threshold_percent, 4)),
        p.positions_closed_count, _dec(p.total_loss_gbp, 4), p.action_taken.value, p.status,
        envelope.occurred_at, p.executed_at, p.revision, envelope.occurred_at,
    )


def lock_row(envelope: Envelope[AccountLocked | AccountUnlocked]) -> tuple[Any, ...]:
    """A lock's own id is its event id; an unlock names the lock it ends, who ended it and why."""
    p = envelope.payload
    if isinstance(p, AccountLocked):
        return (envelope.event_id, p.user_id, envelope.event_type, envelope.event_id, p.kind.value, p.ends.value,
                None, p.message, envelope.occurred_at)
    return (envelope.event_id, p.user_id, envelope.event_type, p.lock_id, p.kind.value, None, p.unlocked_by,
            p.reason, envelope.occurred_at)


_ROW_OF_TABLE = {
    RECONCILIATION_LOGS.name: reconciliation_row,
    POSITION_SNAPSHOTS.name: snapshot_row,
    DRAWDOWN_ALERTS.name: alert_row,
    ACCOUNT_LOCK_EVENTS.name: lock_row,
}


def row_for(table: TableSpec, envelope: Envelope[Any]) -> tuple[Any, ...]:
    return _ROW_OF_TABLE[table.name](envelope)


def user_of(envelope: Envelope[Any]) -> str:
    return envelope.payload.user_id
