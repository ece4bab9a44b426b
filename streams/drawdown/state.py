"""What the drawdown guard keeps per account: peak, day, confirmation streaks, a pending liquidation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.common import CloseReason
from schemas.decisions import AlertType
from streams.decisions import CauseRef
from streams.drawdown.lock import AccountLock


@dataclass(frozen=True)
class Held:
    ticket: int
    symbol: str
    volume: float
    profit_gbp: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class Reading:
    at: datetime
    equity_gbp: float
    balance_gbp: float
    tickets: tuple[int, ...]
    gbp_rate: float = 1.0


@dataclass(frozen=True)
class AppliedFlow:
    """A money flow the guard has moved its peak and day start by (shown in decision records)."""

    ticket: int
    kind: str
    amount_gbp: float
    at: datetime
    ratio: float  # what the peak and the day start were multiplied by


@dataclass(frozen=True)
class PendingClose:
    """A triggered liquidation: fixed at the trigger, fired at ``deadline``."""

    cause: CauseRef
    alert_type: AlertType
    reason: CloseReason
    deadline: datetime
    inputs: dict[str, Any]
    #: The warning's id, which every close and alert state of this liquidation carries. None: a trigger
    #: from before liquidations were numbered, whose warning's id was derived from its cause.
    alert_id: uuid.UUID | None = None


@dataclass(frozen=True)
class DrawdownState:
    peak_equity_gbp: float | None = None
    day: str | None = None
    day_start_equity_gbp: float | None = None
    streaks: dict[str, int] = field(default_factory=dict)
    warning_active: bool = False
    pending: PendingClose | None = None
    ordered: dict[int, datetime] = field(default_factory=dict)  # ticket -> when a close was ordered
    positions: tuple[Held, ...] = ()
    sync_error: str | None = None
    flows: tuple[AppliedFlow, ...] = ()  # the latest money flows applied, newest last
    # The time of the newest flow dropped from ``flows``: a flow reported again that is not older is new.
    flows_floor: datetime | None = None
    # The first trusted reading's time: a flow the poller did not see appear, and older than this,
    # was in the account before the guard's first reading (``readings.apply_flows``).
    since: datetime | None = None
    lock: AccountLock | None = None  # after a liquidation (streams/drawdown/lock.py)
    # Liquidations triggered so far: the next one's number, its identity with the account's
    # (``liquidation.liquidation_id``). It moves in the same write as ``pending``, so a restore that
    # loses that write re-derives the trigger under the same number, hence the same alert.
    liquidations: int = 0
    # What the prop-firm profiles measure from (streams/drawdown/profiles.py)
    initial_balance_gbp: float | None = None  # the first trusted reading's balance
    balance_day: str | None = None  # the broker day day_start_balance_gbp belongs to
    day_start_balance_gbp: float | None = None  # the day's first trusted balance: the balance at midnight
    eod_balance_peak_gbp: float | None = None  # the highest end-of-day balance (and the initial balance)
    # The net of the money flows applied since the first reading: the prop profiles' initial balance
    # moves by it, so a withdrawal is no loss and a deposit no gain for them either.
    flows_net_gbp: float = 0.0
    # Volatile: refreshed by every report; changing them alone does not need a table write.
    positions_at: datetime | None = field(default=None, compare=False)
    last: Reading | None = field(default=None, compare=False)
    last_seq: int | None = field(default=None, compare=False)  # the poll sequence number of ``last``
    suspect: Reading | None = field(default=None, compare=False)
    last_account: dict[str, float] = field(default_factory=dict, compare=False)
    last_snapshot_at: datetime | None = field(default=None, compare=False)
    # The latest trusted equities (a new peak needs ``confirmations`` of them), and today's first ones
    # (the day's baseline is set once ``confirmations`` trusted readings of the day agree).
    recent: tuple[float, ...] = field(default=(), compare=False)
    day_recent: tuple[float, ...] = field(default=(), compare=False)
    untrusted: int = field(default=0, compare=False)  # untrusted readings seen (shown in snapshots)
    profile: str | None = field(default=None, compare=False)  # "name@version" of the last assessment


DRAWDOWN, DAILY, WARNING, TARGET = "drawdown", "daily", "warning", "target"
#: How many applied money flows the state keeps (and decision records show).
FLOWS_KEPT = 20

