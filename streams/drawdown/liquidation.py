"""The liquidation at its deadline: one close command per symbol, all under the trigger's alert.

What became of the commands (confirmed, superseded, refused and retried, escalated) is the alert
tracker's to follow (``streams/alerts/lifecycle.py``): the alert says what the terminal confirmed,
never what was merely ordered.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from schemas import Envelope, derive_id, derived
from schemas.commands import ClosePosition
from schemas.decisions import ActionTaken, AlertType, GuardAlertRaised
from schemas.envelope import derived_uuid
from streams.decisions import Decision, replace
from streams.drawdown.state import WARNING, DrawdownState, Held, PendingClose


def fire_due(state: DrawdownState, now: datetime) -> Decision[DrawdownState]:
    """At the deadline: one close command per symbol for every open position, under the trigger's alert."""
    pending = state.pending
    if pending is None or pending.deadline > now:
        return Decision(state)
    by_symbol: dict[str, list[Held]] = {}
    for h in state.positions:
        by_symbol.setdefault(h.symbol, []).append(h)
    details = pending.inputs | {"ordered_at": now.isoformat()}
    alert_id = trigger_alert_id(pending)
    every = tuple(sorted(h.ticket for h in state.positions))
    outputs: list[Envelope[Any]] = []
    for symbol, held in sorted(by_symbol.items()):
        command = ClosePosition(user_id=pending.cause.account_id, symbol=symbol,
                                tickets=tuple(sorted(h.ticket for h in held)), reason=pending.reason,
                                rule=f"{pending.reason.value}/close", details=details, alert_id=alert_id,
                                alert_tickets=every)
        outputs.append(derived(command, cause=pending.cause, rule=f"{pending.reason.value}/close/{symbol}",
                               occurred_at=now))
    if not every:
        outputs.append(_nothing_to_close(pending, alert_id, now, details))
    return Decision(_fired(state, every, now), tuple(outputs))


def on_own_command(state: DrawdownState, event: Envelope[ClosePosition]) -> DrawdownState:
    """A liquidation's close command, read back.

    The pending liquidation's: it has fired already (its closes are on the log, from before a restart
    whose restored state still held the trigger), so it does not fire again. The account's next
    liquidation's, with none pending: one this state does not count (restored from before its trigger,
    or rebuilt from the log after the state was lost, as after a restart of the embedded broker, when
    the replayed reports are too old to trigger anything). It is counted, so the account's next
    liquidation gets a new identity, never the id of one already on the log."""
    pending, command = state.pending, event.payload
    if command.alert_id is None:
        return state
    tickets = command.alert_tickets or command.tickets
    if pending is not None:
        return _fired(state, tickets, event.occurred_at) if command.alert_id == trigger_alert_id(pending) else state
    if command.alert_id != liquidation_id(event.account_id, state.liquidations):
        return state
    return replace(_fired(state, tickets, event.occurred_at), liquidations=state.liquidations + 1)


def _fired(state: DrawdownState, tickets: tuple[int, ...], at: datetime) -> DrawdownState:
    """The pending liquidation ordered ``tickets`` closed at ``at``: its confirmation streaks start again."""
    streaks = {k: v for k, v in state.streaks.items() if k == WARNING}
    return replace(state, pending=None, ordered=state.ordered | dict.fromkeys(tickets, at), streaks=streaks)


def liquidation_id(account_id: str, number: int) -> uuid.UUID:
    """The id of an account's ``number``-th liquidation (from 0): its warning's, and every close's and
    alert state's after it. A pure function of the account's history, not of the report that happened to
    confirm the breach, so a trigger derived again after a restore is the same liquidation."""
    return derived_uuid(f"liquidation/{account_id}/{number}")


def trigger_alert_id(pending: PendingClose) -> uuid.UUID:
    """The id of the warning the trigger raised (``levels._trigger``): the alert every close belongs to."""
    return pending.alert_id or derive_id(pending.cause.event_id, f"{pending.reason.value}/warning")


def _nothing_to_close(pending: PendingClose, alert_id: uuid.UUID, now: datetime, details: dict[str, Any]) -> Envelope[Any]:
    alert = GuardAlertRaised(
        user_id=pending.cause.account_id, alert_type=pending.alert_type, action_taken=ActionTaken.WARNING_SENT,
        status="superseded", message="no open positions at the deadline: nothing to close",
        drawdown_percent=pending.inputs.get("drawdown_percent") if pending.alert_type is AlertType.DRAWDOWN_CRITICAL
        else pending.inputs.get("daily_loss_percent"),
        equity_gbp=pending.inputs.get("equity_gbp"), threshold_percent=pending.inputs.get("threshold_percent"),
        details=details, alert_id=alert_id, revision=1)
    return derived(alert, cause=pending.cause, rule=f"{pending.reason.value}/executed", occurred_at=now)
