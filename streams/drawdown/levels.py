"""Levels: confirmation streaks, the warning, and the trigger of a liquidation with its deadline."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from infra.settings import AccountLevels, GuardSettings
from schemas import Envelope
from schemas.common import CloseReason
from schemas.decisions import ActionTaken, AlertType
from schemas.reports import AccountReport
from streams.decisions import CauseRef, replace
from streams.drawdown.outputs import guard_alert
from streams.drawdown.readings import daily_loss, drawdown_percent
from streams.drawdown.state import DAILY, DRAWDOWN, WARNING, DrawdownState, Held, PendingClose, Reading


def assess_levels(state: DrawdownState, event: Envelope[AccountReport], reading: Reading, levels: AccountLevels,
                   config: GuardSettings, now: datetime | None = None) -> tuple[DrawdownState, list[Envelope[Any]]]:
    drawdown = drawdown_percent(state, reading)
    loss_gbp, loss_percent = daily_loss(state, reading)
    streaks = {
        DRAWDOWN: state.streaks.get(DRAWDOWN, 0) + 1 if drawdown >= levels.critical_drawdown_percent else 0,
        DAILY: state.streaks.get(DAILY, 0) + 1 if loss_percent >= levels.daily_loss_limit_percent else 0,
        WARNING: state.streaks.get(WARNING, 0) + 1 if drawdown >= levels.warning_drawdown_percent else 0,
    }
    streaks = {k: min(v, config.confirmations) for k, v in streaks.items() if v}
    state = replace(state, streaks=streaks)
    confirmed = {k for k, v in streaks.items() if v >= config.confirmations}
    if not confirmed and not state.warning_active:
        return state, []  # nothing to say: most readings end here
    inputs = _inputs(state, reading, drawdown, loss_gbp, loss_percent, levels, config)
    outputs: list[Envelope[Any]] = []
    if state.pending is None and _unordered(state, reading.at, config):
        trigger = _trigger(state, event, confirmed, drawdown, loss_percent, levels, inputs, now or event.occurred_at)
        if trigger is not None:
            state, alert = trigger
            outputs.append(alert)
    if WARNING in confirmed and not state.warning_active:
        state = replace(state, warning_active=True)
        if not outputs:  # a critical alert said more already
            outputs.append(guard_alert(event, "drawdown/warning", AlertType.DRAWDOWN_WARNING, ActionTaken.WARNING_SENT,
                                  status="open", message=f"Drawdown {drawdown:.2f}% reached the warning level "
                                  f"{levels.warning_drawdown_percent:g}%", drawdown_percent=drawdown,
                                  equity_gbp=reading.equity_gbp, threshold_percent=levels.warning_drawdown_percent,
                                  details=inputs))
    elif drawdown < levels.warning_drawdown_percent and state.warning_active:
        state = replace(state, warning_active=False)  # re-armed: the next crossing warns again
    return state, outputs


def _inputs(state: DrawdownState, reading: Reading, drawdown: float, loss_gbp: float, loss_percent: float,
            levels: AccountLevels, config: GuardSettings) -> dict[str, Any]:
    """What an alert or close records of the reading and levels that produced it."""
    return {"equity_gbp": round(reading.equity_gbp, 4), "peak_equity_gbp": round(state.peak_equity_gbp or 0, 4),
            "drawdown_percent": round(drawdown, 4), "day": state.day,
            "day_start_equity_gbp": round(state.day_start_equity_gbp or 0, 4),
            "daily_loss_gbp": round(loss_gbp, 4), "daily_loss_percent": round(loss_percent, 4),
            "confirmations": config.confirmations, "reading_at": reading.at.isoformat(),
            "levels": levels.model_dump(),
            "money_flows": [{"ticket": f.ticket, "kind": f.kind, "amount_gbp": f.amount_gbp, "at": f.at.isoformat(),
                             "ratio": f.ratio} for f in state.flows]}


def _unordered(state: DrawdownState, at: datetime, config: GuardSettings) -> list[Held]:
    """Open positions no guard has ordered closed within ``reclose_after_seconds``."""
    window = timedelta(seconds=config.reclose_after_seconds)
    return [h for h in state.positions if h.ticket not in state.ordered or at - state.ordered[h.ticket] >= window]


def _trigger(state: DrawdownState, event: Envelope[AccountReport], confirmed: set[str], drawdown: float,
             loss_percent: float, levels: AccountLevels, inputs: dict[str, Any], now: datetime
             ) -> tuple[DrawdownState, Envelope[Any]] | None:
    if DRAWDOWN in confirmed:
        kind, reason, value, threshold, what = (AlertType.DRAWDOWN_CRITICAL, CloseReason.DRAWDOWN_GUARD, drawdown,
                                                levels.critical_drawdown_percent, "Drawdown")
    elif DAILY in confirmed:
        kind, reason, value, threshold, what = (AlertType.DAILY_LOSS_CRITICAL, CloseReason.DAILY_LOSS_GUARD,
                                                loss_percent, levels.daily_loss_limit_percent, "Daily loss")
    else:
        return None
    grace = levels.close_grace_seconds
    # The owner's notice runs from the warning, sent now, not from the report (a late worker would cut it).
    warned_at = max(event.occurred_at, now)
    deadline = warned_at + timedelta(seconds=grace)
    inputs = inputs | {"threshold_percent": threshold, "close_grace_seconds": grace,
                       "deadline": deadline.isoformat(), "warning_at": warned_at.isoformat(),
                       "trigger_event_id": str(event.event_id)}
    pending = PendingClose(CauseRef.of(event), kind, reason, deadline, inputs)
    alert = guard_alert(event, f"{reason.value}/warning", kind, ActionTaken.WARNING_SENT, status="open",
                   message=f"{what} {value:.2f}% reached the critical level {threshold:g}%: "
                           f"positions close in {grace:g} s", drawdown_percent=value,
                   equity_gbp=inputs["equity_gbp"], threshold_percent=threshold, details=inputs)
    return replace(state, pending=pending), alert

