"""What the alert tracker keeps per account: each guard alert's tickets and where each one stands."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.common import CloseReason
from streams.decisions import CauseRef

ORDERED, CLOSED, SUPERSEDED, FAILED, DEFERRED = "ordered", "closed", "superseded", "failed", "deferred"
#: A ticket in one of these is done: nothing will be sent for it again.
FINAL = frozenset({CLOSED, SUPERSEDED})


@dataclass(frozen=True)
class TicketState:
    symbol: str
    status: str = ORDERED  # ordered (a command is in flight), closed, superseded, failed, deferred
    command: str = ""  # the first 16 hex digits of the command in flight, or of the one that answered
    pnl_gbp: float | None = None  # closed: the realised P&L the executor reported
    at: datetime | None = None  # when the answer happened
    why: str | None = None  # failed: the refusal; superseded: what closed it
    retry_at: datetime | None = None  # deferred: the market's next open


@dataclass(frozen=True)
class AlertProgress:
    """One guard alert from its first close command to the end of its lifecycle."""

    alert_id: str
    cause: CauseRef  # the first command: retries and alert states are derived from it
    reason: CloseReason
    rule: str
    symbol: str | None  # the market guard's symbol; None for a liquidation of the whole account
    details: dict[str, Any]  # the decision's inputs, as the first command carried them
    ordered_at: datetime
    tickets: dict[int, TicketState] = field(default_factory=dict)
    commands: tuple[str, ...] = ()  # every command of the alert (first 16 hex digits of its id)
    status: str = ORDERED
    revision: int = 0  # of the last alert state published (the guard published revision 0)
    retries: int = 0  # retries sent because of a refusal (deferrals to a market's open are not counted)
    retry_at: datetime | None = None
    done_at: datetime | None = None  # kept a day after it ends, so a redelivered command is recognised


#: Results kept for commands not read yet (see ``AlertsState.early``); the oldest go first.
EARLY_KEPT = 64


@dataclass(frozen=True)
class AlertsState:
    alerts: dict[str, AlertProgress] = field(default_factory=dict)
    #: Answers that came before their command (results and commands are on two topics, read in no
    #: set order): "ticket/command" -> the ticket as the answer leaves it, applied when the command comes.
    early: dict[str, TicketState] = field(default_factory=dict)
