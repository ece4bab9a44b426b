"""The account lock: after a liquidation the account takes no new positions until the lock ends.

Pure functions over the drawdown state. A liquidation's first close command (drawdown or daily
loss guard, read back from ``close-commands``) locks the account and publishes ``AccountLocked``,
which tells the platform to stop approving its trades. While it is locked, any position the
guard did not already order closed is closed at once with reason ``account_locked`` (no warning,
no grace), and the drawdown levels are not assessed, so no new trigger, warning or grace is
started. A daily-loss lock ends at the next broker day; a drawdown lock when an admin unlocks it
(``UnlockAccount``). An admin's unlock also re-bases the high-water mark and the day's starting
equity to the current equity: the admin accepts the loss, or the account would be liquidated
again at its next trade.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from infra.settings import GuardSettings
from schemas import Envelope, derived
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from schemas.locks import AccountLocked, AccountUnlocked, LockEnd, LockKind, UnlockAccount
from schemas.reports import PositionReport
from streams.decisions import Decision, replace

if TYPE_CHECKING:
    from streams.drawdown.state import DrawdownState

SYSTEM = "system"
_KIND_OF_REASON = {CloseReason.DRAWDOWN_GUARD: LockKind.DRAWDOWN, CloseReason.DAILY_LOSS_GUARD: LockKind.DAILY_LOSS}
_END_OF_KIND = {LockKind.DRAWDOWN: LockEnd.ADMIN_UNLOCK, LockKind.DAILY_LOSS: LockEnd.NEXT_BROKER_DAY}


@dataclass(frozen=True)
class AccountLock:
    """The account's latest lock: in force until ``ended_at``; kept after, so the liquidation that
    caused it (``trigger``) cannot lock the account again with a late or retried command."""

    lock_id: uuid.UUID  # the id of its AccountLocked event
    kind: LockKind
    ends: LockEnd
    since: datetime
    day: str | None = None  # the broker day it began (a daily-loss lock ends when the day changes)
    closing: dict[int, datetime] = field(default_factory=dict)  # new tickets the lock ordered closed, and when
    trigger: uuid.UUID | None = None  # the correlation id of the liquidation's commands
    ended_at: datetime | None = None


def locked(state: DrawdownState) -> bool:
    return state.lock is not None and state.lock.ended_at is None


def on_close_command(state: DrawdownState, event: Envelope[ClosePosition]) -> Decision[DrawdownState]:
    """A liquidation's first close command locks the account (later ones, and other guards', do not)."""
    kind = _KIND_OF_REASON.get(event.payload.reason)
    trigger = event.correlation_id or event.event_id  # every message derived from one trigger shares it
    if kind is None or locked(state) or state.lock is not None and state.lock.trigger == trigger:
        return Decision(state)
    ends = _END_OF_KIND[kind]
    until = "the next broker day" if ends is LockEnd.NEXT_BROKER_DAY else "an admin unlocks it"
    payload = AccountLocked(
        user_id=event.account_id, kind=kind, ends=ends, day=state.day,
        message=f"account locked after the {event.payload.reason.value.replace('_', ' ')}'s liquidation: "
                f"approve no trade for it; new positions are closed until {until}",
        details={"command_id": str(event.event_id), "rule": event.payload.rule, "inputs": event.payload.details})
    out = derived(payload, cause=event, rule="account/locked")
    lock = AccountLock(out.event_id, kind, ends, event.occurred_at, state.day, trigger=trigger)
    return Decision(replace(state, lock=lock), (out,))


def close_new_positions(state: DrawdownState, event: Envelope[PositionReport], config: GuardSettings
                        ) -> Decision[DrawdownState]:
    """While locked: close every position the guard did not order closed, at once (one command per symbol)."""
    lock = state.lock
    if lock is None or lock.ended_at is not None:
        return Decision(state)
    at, window = event.occurred_at, timedelta(seconds=config.reclose_after_seconds)
    live = {p.ticket: p for p in event.payload.positions}
    closing = {t: when for t, when in lock.closing.items() if t in live}
    due = [p for t, p in sorted(live.items()) if t not in state.ordered and
           (t not in closing or at - closing[t] >= window)]
    by_symbol: dict[str, list[int]] = {}
    for p in due:
        by_symbol.setdefault(p.symbol, []).append(p.ticket)
    outputs = tuple(_close(event, lock, symbol, tickets) for symbol, tickets in sorted(by_symbol.items()))
    closing |= {p.ticket: at for p in due}
    if closing == lock.closing:
        return Decision(state, outputs)
    return Decision(replace(state, lock=replace(lock, closing=closing)), outputs)


def _close(event: Envelope[PositionReport], lock: AccountLock, symbol: str, tickets: list[int]) -> Envelope[Any]:
    command = ClosePosition(user_id=event.account_id, symbol=symbol, tickets=tuple(tickets),
                            reason=CloseReason.ACCOUNT_LOCKED, rule="account_locked/close",
                            details={"lock_id": str(lock.lock_id), "lock_kind": lock.kind.value,
                                     "locked_since": lock.since.isoformat()})
    return derived(command, cause=event, rule=f"account_locked/close/{symbol}")


def on_reading(state: DrawdownState, event: Envelope[Any]) -> Decision[DrawdownState]:
    """After a good reading (``state.day`` is the reading's broker day): a daily-loss lock ends with its day."""
    lock = state.lock
    if not locked(state) or lock.ends is not LockEnd.NEXT_BROKER_DAY or state.day == lock.day:
        return Decision(state)
    return unlock(state, event, by=SYSTEM, reason=f"a new broker day began ({state.day})")


def on_unlock(state: DrawdownState, event: Envelope[UnlockAccount]) -> Decision[DrawdownState]:
    """An admin ends the lock (a command for an account that is not locked changes nothing)."""
    if not locked(state):
        return Decision(state)
    return unlock(state, event, by=event.payload.requested_by, reason=event.payload.reason)


def unlock(state: DrawdownState, event: Envelope[Any], *, by: str, reason: str) -> Decision[DrawdownState]:
    lock = state.lock
    assert lock is not None and lock.ended_at is None
    unlocked = AccountUnlocked(user_id=event.account_id, lock_id=lock.lock_id, kind=lock.kind, unlocked_by=by,
                               reason=reason)
    out = derived(unlocked, cause=event, rule=f"account/unlocked/{lock.lock_id}")
    state = replace(state, lock=replace(lock, ended_at=event.occurred_at, closing={}), streaks={})
    if by != SYSTEM and state.last is not None:  # an admin accepts the loss: measure from here on
        equity = state.last.equity_gbp
        state = replace(state, peak_equity_gbp=equity, day_start_equity_gbp=equity, warning_active=False)
    return Decision(state, (out,))
