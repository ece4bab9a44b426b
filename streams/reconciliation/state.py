"""What reconciliation keeps per account (approved trades, positions last held, open divergences),
and the conditions a report is found to hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.common import Direction
from schemas.decisions import BindingEvidence, DivergenceReason
from schemas.reports import ObservedPosition


@dataclass(frozen=True)
class ExpectedTrade:
    approval_id: str
    signal_id: str
    symbol: str
    direction: Direction
    volume: float
    entry_price: float
    stop_loss: float | None
    take_profit: float | None
    approved_at: datetime
    ticket: int | None = None
    evidence: BindingEvidence | None = None  # why ``ticket`` is this trade's position
    platform_closed_volume: float = 0.0
    platform_closed_at: datetime | None = None
    held_at_platform_close: float | None = None  # the position's volume when the platform said it closed part
    platform_closed_all: bool = False
    partially_closed: bool = False
    matched_once: bool = False
    done_at: datetime | None = None

    @property
    def open_volume(self) -> float:
        return self.volume - self.platform_closed_volume


@dataclass(frozen=True)
class Held:
    """The stable part of an observed position (prices and P&L move every poll and are not kept)."""

    ticket: int
    symbol: str
    direction: Direction
    volume: float
    price_open: float
    sl: float | None
    tp: float | None
    comment: str
    opened_at: datetime

    @classmethod
    def of(cls, p: ObservedPosition) -> "Held":
        return cls(p.ticket, p.symbol, p.direction, p.volume, p.price_open, p.sl, p.tp, p.comment, p.opened_at)

    def same_as(self, p: ObservedPosition) -> bool:
        """``Held.of(p) == self``, without building one: asked of every position at every report."""
        return (self.ticket, self.symbol, self.direction, self.volume, self.price_open, self.sl, self.tp,
                self.comment, self.opened_at) == (p.ticket, p.symbol, p.direction, p.volume, p.price_open, p.sl,
                                                  p.tp, p.comment, p.opened_at)


@dataclass(frozen=True)
class OpenDivergence:
    reason: DivergenceReason
    since: datetime
    approval_id: str | None = None
    ticket: int | None = None


@dataclass(frozen=True)
class ReconciliationState:
    expected: dict[str, ExpectedTrade] = field(default_factory=dict)
    held: dict[int, Held] = field(default_factory=dict)
    divergences: dict[str, OpenDivergence] = field(default_factory=dict)
    guard_closing: dict[int, str] = field(default_factory=dict)
    indeterminate_since: datetime | None = None
    positions_at: datetime | None = None  # the report that last changed this state: older ones are stale


@dataclass(frozen=True)
class Condition:
    """A divergence that holds at this report, with the record that describes it."""

    reason: DivergenceReason
    approval_id: str | None
    ticket: int | None
    fields: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.reason.value}|{self.approval_id or ''}|{self.ticket or ''}"
