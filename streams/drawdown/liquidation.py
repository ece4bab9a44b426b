"""The liquidation at its deadline, and a close the executor could not do."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas import Envelope, derived
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from schemas.decisions import ActionTaken, AlertType, GuardAlertRaised
from schemas.results import PositionCloseFailed
from streams.decisions import Decision, replace
from streams.drawdown.state import WARNING, DrawdownState, Held


def fire_due(state: DrawdownState, now: datetime) -> Decision[DrawdownState]:
    """At the deadline: one close command per symbol for every open position, and the alert."""
    pending = state.pending
    if pending is None or pending.deadline > now:
        return Decision(state)
    by_symbol: dict[str, list[Held]] = {}
    for h in state.positions:
        by_symbol.setdefault(h.symbol, []).append(h)
    details = pending.inputs | {"executed_at": now.isoformat()}
    outputs: list[Envelope[Any]] = []
    for symbol, held in sorted(by_symbol.items()):
        command = ClosePosition(user_id=pending.cause.account_id, symbol=symbol,
                                tickets=tuple(sorted(h.ticket for h in held)), reason=pending.reason,
                                rule=f"{pending.reason.value}/close", details=details)
        outputs.append(derived(command, cause=pending.cause, rule=f"{pending.reason.value}/close/{symbol}",
                               occurred_at=now))
    pnl = sum(h.profit_gbp for h in state.positions)
    count = len(state.positions)
    message = f"{count} position(s) ordered closed by the {pending.reason.value.replace('_', ' ')}" if count else \
        "no open positions at the deadline: nothing to close"
    alert = GuardAlertRaised(
        user_id=pending.cause.account_id, alert_type=pending.alert_type, action_taken=ActionTaken.POSITIONS_CLOSED,
        status="executed", message=message, drawdown_percent=pending.inputs.get("drawdown_percent")
        if pending.alert_type is AlertType.DRAWDOWN_CRITICAL else pending.inputs.get("daily_loss_percent"),
        equity_gbp=pending.inputs.get("equity_gbp"), threshold_percent=pending.inputs.get("threshold_percent"),
        positions_closed_count=count, total_loss_gbp=round(max(0.0, -pnl), 4), executed_at=now,
        details=details | {"open_pnl_gbp": round(pnl, 4), "tickets": sorted(h.ticket for h in state.positions)})
    outputs.append(derived(alert, cause=pending.cause, rule=f"{pending.reason.value}/executed", occurred_at=now))
    ordered = state.ordered | {h.ticket: now for h in state.positions}
    streaks = {k: v for k, v in state.streaks.items() if k == WARNING}
    return Decision(replace(state, pending=None, ordered=ordered, streaks=streaks), tuple(outputs))


def close_failed_alerts(event: Envelope[PositionCloseFailed]) -> tuple[Envelope[Any], ...]:
    """A guard close the executor could not do: the failure is an alert of its own."""
    r = event.payload
    kind = _ALERT_OF_REASON.get(r.reason)
    if kind is None:
        return ()
    alert = GuardAlertRaised(
        user_id=r.user_id, alert_type=kind, action_taken=ActionTaken.FAILED, status="failed",
        message=f"could not close position {r.ticket} ({r.symbol}): {r.error_message or r.retcode}"[:2000],
        symbol=r.symbol, details={"command_id": str(r.command_id), "ticket": r.ticket, "retcode": r.retcode,
                                  "attempts": r.attempts})
    return (derived(alert, cause=event, rule="guard/close-failed"),)


_ALERT_OF_REASON = {CloseReason.DRAWDOWN_GUARD: AlertType.DRAWDOWN_CRITICAL,
                    CloseReason.DAILY_LOSS_GUARD: AlertType.DAILY_LOSS_CRITICAL,
                    CloseReason.MARKET_GAP: AlertType.MARKET_GAP, CloseReason.SPREAD: AlertType.SPREAD,
                    CloseReason.STALE_FEED: AlertType.STALE_FEED}

