"""What the API answers: the `...Public` family, built from rows, never the rows themselves."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class PublicModel(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class UserPublic(PublicModel):
    id: str
    display_name: str
    role: Literal["trader", "admin"]
    mt5_login: int | None
    mt5_server: str | None
    account_currency: str | None
    telegram_linked: bool = Field(
        description="Whether alerts go to a Telegram chat (the chat id stays private)"
    )
    warning_drawdown_percent: float
    critical_drawdown_percent: float
    daily_loss_limit_percent: float


class ReconciliationLogPublic(PublicModel):
    id: uuid.UUID
    user_id: str
    signal_id: str | None
    approval_id: str | None
    mt5_position_id: int | None
    symbol: str | None
    direction: str | None
    volume: float
    entry_price: float | None
    current_price: float | None
    take_profit: float | None
    stop_loss: float | None
    matched: int = Field(description="0 divergence, 1 matched, 2 indeterminate (terminal unreadable)")
    divergence_reason: str | None
    close_reason: str | None
    closed_price: float | None
    pnl_gbp: float
    pnl_percent: float
    event_type: str
    status: str
    error_message: str | None
    created_at: datetime
    updated_at: datetime


class PositionSnapshotPublic(PublicModel):
    id: uuid.UUID
    user_id: str
    equity_gbp: float
    balance_gbp: float
    peak_equity_gbp: float
    drawdown_percent: float
    open_positions_count: int
    total_volume_lots: float
    open_pnl_gbp: float
    margin_used_percent: float
    last_sync_at: datetime | None
    sync_error: str | None
    created_at: datetime


class DrawdownAlertPublic(PublicModel):
    id: uuid.UUID
    user_id: str
    alert_type: str
    drawdown_percent: float
    equity_gbp: float
    threshold_percent: float
    positions_closed_count: int
    total_loss_gbp: float
    action_taken: str
    status: str
    created_at: datetime
    executed_at: datetime | None


T = TypeVar("T")


class PagePublic(BaseModel, Generic[T]):
    """Newest first. Pass ``next_cursor`` back as ``cursor`` for the next (older) page."""

    items: list[T]
    next_cursor: str | None = Field(description="None on the last page")


class ReconciliationStatusPublic(BaseModel):
    """The latest reconciliation outcome of each position (or expected trade) of an account."""

    user_id: str
    as_of: datetime
    open_divergences: int = Field(description="Positions whose latest outcome is a divergence")
    positions: list[ReconciliationLogPublic] = Field(description="Latest row per position, newest first")
    latest_snapshot: PositionSnapshotPublic | None


class SyncRequestedPublic(BaseModel):
    command_id: uuid.UUID
    user_id: str
    requested_at: datetime


class CheckPublic(BaseModel):
    ok: bool
    latency_ms: float
    error: str | None = Field(default=None, description="The kind of failure (never connection secrets)")


class ServicePublic(BaseModel):
    """A service supervised by `reconguard run` (absent when the API runs on its own)."""

    state: Literal["starting", "running", "restarting", "stopped"]
    restarts: int
    crash_loop: bool
    last_error: str | None = None


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, CheckPublic]
    services: dict[str, ServicePublic] = Field(default_factory=dict)


class CallerPublic(BaseModel):
    user_id: str
    role: Literal["trader", "admin"]


class SeriesPointPublic(BaseModel):
    t: datetime
    equity_gbp: float
    drawdown_percent: float


class AccountOverviewPublic(BaseModel):
    user_id: str
    display_name: str
    warning_drawdown_percent: float
    critical_drawdown_percent: float
    latest: PositionSnapshotPublic | None
    series: list[SeriesPointPublic] = Field(description="Oldest first")
    open_divergences: list[ReconciliationLogPublic]
    recent_alerts: list[DrawdownAlertPublic]
    recent_closes: list[ReconciliationLogPublic]


class OverviewPublic(BaseModel):
    generated_at: datetime
    refresh_seconds: int
    accounts: list[AccountOverviewPublic]
