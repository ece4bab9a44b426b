"""What the streams conclude: reconciliation outcomes, account assessments and guard alerts.

Each carries the inputs and thresholds that produced it (``details``), so a reader of the
topic or of the table can see why.
"""

from __future__ import annotations

import uuid
from enum import IntEnum, StrEnum
from typing import Any, ClassVar

from pydantic import AwareDatetime, Field

from schemas.common import CloseReason, Direction, Money, Percent, Price, Symbol, Ticket, UserId, Volume
from schemas.envelope import Payload


class Matched(IntEnum):
    """``reconciliation_logs.matched``: 0 a divergence, 1 matched, 2 indeterminate (terminal unreadable)."""

    DIVERGENCE = 0
    MATCHED = 1
    INDETERMINATE = 2


class DivergenceReason(StrEnum):
    MISSING = "missing"
    UNEXPECTED = "unexpected"
    VOLUME_MISMATCH = "volume_mismatch"
    DIRECTION_MISMATCH = "direction_mismatch"
    SLIPPAGE = "slippage"
    SL_TP_DRIFT = "sl_tp_drift"
    PARTIAL_CLOSE = "partial_close"
    CLOSED_OUTSIDE_PLATFORM = "closed_outside_platform"
    GAP = "gap"
    CLOSE_NOT_EXECUTED = "close_not_executed"


class ReconciliationStatus(StrEnum):
    MATCHED = "matched"
    DIVERGENCE = "divergence"
    SUCCESS = "success"
    FAILED = "failed"


class ReconciliationRecord(Payload):
    """One row of ``reconciliation_logs``; the event type says which kind of row."""

    user_id: UserId
    matched: Matched
    status: ReconciliationStatus
    signal_id: str | None = Field(default=None, max_length=64)
    approval_id: str | None = Field(default=None, max_length=64)
    mt5_position_id: Ticket | None = None
    symbol: Symbol | None = None
    direction: Direction | None = None
    volume: Volume | None = None
    entry_price: Price | None = None
    current_price: Price | None = None
    take_profit: Price | None = None
    stop_loss: Price | None = None
    divergence_reason: DivergenceReason | None = None
    close_reason: CloseReason | None = None
    closed_price: Price | None = None
    pnl_gbp: Money | None = None
    pnl_percent: Percent | None = None
    error_message: str | None = Field(default=None, max_length=2000)
    divergence_since: AwareDatetime | None = Field(default=None, description="When the divergence appeared")
    details: dict[str, Any] = Field(default_factory=dict, description="Expected vs observed, tolerances")


class PositionMatched(ReconciliationRecord):
    event_type: ClassVar[str] = "PositionMatched"


class DivergenceDetected(ReconciliationRecord):
    event_type: ClassVar[str] = "DivergenceDetected"


class DivergenceResolved(ReconciliationRecord):
    event_type: ClassVar[str] = "DivergenceResolved"


class ReconciliationIndeterminate(ReconciliationRecord):
    event_type: ClassVar[str] = "ReconciliationIndeterminate"


class PositionCloseRecorded(ReconciliationRecord):
    """A close the guard ordered, as executed (status success) or not (failed)."""

    event_type: ClassVar[str] = "PositionCloseRecorded"


class BindingEvidence(StrEnum):
    """Why a trade is bound to a position, strongest first (docs/platform-integration.md)."""

    TICKET = "ticket"  # the platform's mt5_position_id
    PLATFORM = "platform"  # the order's comment names the signal and its magic is the platform's
    COMMENT = "comment"  # the order's comment names the signal (another magic)
    NEARBY = "nearby"  # same symbol, opened near the approval: a guess, revised when evidence appears


class BindingRevised(ReconciliationRecord):
    """A trade bound on weak evidence was bound to another position (or to none): the audit of the change.

    ``mt5_position_id`` is the new ticket (None: unbound); the previous one is ``previous_ticket``."""

    event_type: ClassVar[str] = "BindingRevised"

    previous_ticket: Ticket | None = None
    previous_evidence: BindingEvidence | None = None
    evidence: BindingEvidence | None = None


class AccountAssessed(Payload):
    """The drawdown guard's view of an account after a report: one row of ``position_snapshots``."""

    event_type: ClassVar[str] = "AccountAssessed"

    user_id: UserId
    equity_gbp: Money
    balance_gbp: Money
    peak_equity_gbp: Money
    drawdown_percent: Percent = Field(ge=0)
    daily_loss_gbp: Money = 0.0
    open_positions_count: int = Field(ge=0)
    total_volume_lots: float = Field(ge=0, allow_inf_nan=False)
    open_pnl_gbp: Money
    margin_used_percent: Percent = Field(ge=0)
    last_sync_at: AwareDatetime | None = None
    sync_error: str | None = Field(default=None, max_length=1000)
    profile: str | None = Field(default=None, max_length=80, description="The guard profile, as name@version")


class AlertType(StrEnum):
    DRAWDOWN_WARNING = "drawdown_warning"
    DRAWDOWN_CRITICAL = "drawdown_critical"
    DAILY_LOSS_CRITICAL = "daily_loss_critical"
    MARKET_GAP = "market_gap"
    SPREAD = "spread"
    STALE_FEED = "stale_feed"


class ActionTaken(StrEnum):
    WARNING_SENT = "warning_sent"
    POSITIONS_CLOSED = "positions_closed"
    FAILED = "failed"


class GuardAlertRaised(Payload):
    """A guard warning or trigger, or a later state of the same alert: one row of ``drawdown_alerts``.

    A trigger is one alert (one row, id ``alert_id``) through its states, each a new event with a
    higher ``revision``: ``open`` (the warning) -> ``ordered`` (close commands sent) -> ``executed``
    (every close confirmed by the executor: ``action_taken`` positions_closed, the count, realised loss
    and time of the last confirmation) or ``failed`` (positions remain open; retried) -> ``escalated``
    (the fast retries failed too; retried at a slower cadence) -> ``executed``; ``waiting`` (the market
    is closed: retried at its next open); ``superseded`` (every position was closed by something else).
    """

    event_type: ClassVar[str] = "GuardAlertRaised"

    user_id: UserId
    alert_type: AlertType
    action_taken: ActionTaken
    status: str = Field(max_length=32, description="open, ordered, waiting, executed, failed, escalated, superseded, stopped")
    message: str = Field(max_length=2000)
    drawdown_percent: Percent | None = None
    equity_gbp: Money | None = None
    threshold_percent: Percent | None = None
    positions_closed_count: int = Field(default=0, ge=0)
    total_loss_gbp: Money = 0.0
    symbol: Symbol | None = None
    executed_at: AwareDatetime | None = None
    details: dict[str, Any] = Field(default_factory=dict, description="Inputs and thresholds of the decision")
    alert_id: uuid.UUID | None = Field(default=None, description="The alert this state belongs to (None: this event's id)")
    revision: int = Field(default=0, ge=0, description="The state's number in the alert's lifecycle (0 first)")
