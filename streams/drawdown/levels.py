"""Levels: confirmation streaks, the warning, and the trigger of a liquidation with its deadline."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from infra.settings import AccountLevels, GuardProfile, GuardSettings
from schemas import Envelope, derived
from schemas.common import CloseReason
from schemas.decisions import ActionTaken, AlertType
from schemas.locks import AccountLocked, LockEnd, LockKind
from schemas.reports import AccountReport
from streams.decisions import CauseRef, replace
from streams.drawdown import profiles
from streams.drawdown.liquidation import liquidation_id
from streams.drawdown.lock import AccountLock
from streams.drawdown.outputs import guard_alert
from streams.drawdown.readings import drawdown_percent
from streams.drawdown.state import (
    DAILY,
    DRAWDOWN,
    TARGET,
    WARNING,
    DrawdownState,
    Held,
    PendingClose,
    Reading,
)


def assess_levels(state: DrawdownState, event: Envelope[AccountReport], reading: Reading, levels: AccountLevels,
                  config: GuardSettings, now: datetime | None = None,
                  named_profile: tuple[str, GuardProfile] | None = None) -> tuple[DrawdownState, list[Envelope[Any]]]:
    """``named_profile``: ``config.profile(levels.profile)`` when the caller has it already (every reading)."""
    name, profile = named_profile or config.profile(levels.profile)
    state = profiles.track(state, reading)
    m = profiles.measure(state, reading, levels, name, profile)
    streaks = _streaks(state.streaks, m, config.confirmations)
    if streaks != state.streaks:  # most readings: none, as before
        state = replace(state, streaks=streaks)
    confirmed = {k for k, v in streaks.items() if v >= config.confirmations} if streaks else set()
    if not confirmed and not state.warning_active:
        return state, []  # nothing to say: most readings end here
    inputs = _inputs(state, reading, m, levels, config)
    outputs: list[Envelope[Any]] = []
    if state.pending is None and _unordered(state, reading.at, config):
        trigger = _trigger(state, event, confirmed, m, levels, inputs, now or event.occurred_at)
        if trigger is not None:
            state, alert = trigger
            outputs.append(alert)
    if TARGET in confirmed and state.pending is None:
        state, locked = _target_lock(state, event, m, inputs)
        return state, outputs + [locked]
    if WARNING in confirmed and not state.warning_active:
        state = replace(state, warning_active=True)
        if not outputs:  # a critical alert said more already
            outputs.append(guard_alert(event, "drawdown/warning", AlertType.DRAWDOWN_WARNING, ActionTaken.WARNING_SENT,
                                  status="open", message=f"{m.what} {m.loss_percent:.2f}% reached the warning level "
                                  f"{m.warning:g}%", drawdown_percent=m.loss_percent,
                                  equity_gbp=reading.equity_gbp, threshold_percent=m.warning,
                                  details=inputs))
    elif m.loss_percent < m.warning and state.warning_active:
        state = replace(state, warning_active=False)  # re-armed: the next crossing warns again
    return state, outputs


def _streaks(before: dict[str, int], m: profiles.Measures, confirmations: int) -> dict[str, int]:
    """Consecutive trusted readings at or beyond each level (capped at ``confirmations``); a level the
    reading is within has none."""
    streaks: dict[str, int] = {}
    for key, beyond in ((DRAWDOWN, m.loss_percent >= m.critical), (DAILY, m.daily_percent >= m.daily_limit),
                        (WARNING, m.loss_percent >= m.warning), (TARGET, m.target_reached)):
        if beyond:
            streaks[key] = min(before.get(key, 0) + 1, confirmations)
    return streaks


def _inputs(state: DrawdownState, reading: Reading, m: profiles.Measures, levels: AccountLevels,
            config: GuardSettings) -> dict[str, Any]:
    """What an alert or close records of the reading, profile and levels that produced it."""
    return {"equity_gbp": round(reading.equity_gbp, 4), "peak_equity_gbp": round(state.peak_equity_gbp or 0, 4),
            "drawdown_percent": round(drawdown_percent(state, reading), 4), "day": state.day,
            "day_start_equity_gbp": round(state.day_start_equity_gbp or 0, 4),
            "daily_loss_gbp": round(m.daily_loss_gbp, 4), "daily_loss_percent": round(m.daily_percent, 4),
            "confirmations": config.confirmations, "reading_at": reading.at.isoformat(),
            "levels": levels.model_dump(),
            "money_flows": [{"ticket": f.ticket, "kind": f.kind, "amount_gbp": f.amount_gbp, "at": f.at.isoformat(),
                             "ratio": f.ratio} for f in state.flows]} | m.facts


def _target_lock(state: DrawdownState, event: Envelope[AccountReport], m: profiles.Measures,
                 inputs: dict[str, Any]) -> tuple[DrawdownState, Envelope[Any]]:
    """The profit target is reached: lock the account (its open positions close as a lock's new ones do)."""
    profile = m.facts["profile"]
    payload = AccountLocked(
        user_id=event.account_id, kind=LockKind.PROFIT_TARGET, ends=LockEnd.ADMIN_UNLOCK, day=state.day,
        message=f"profit target of profile {profile['name']} v{profile['version']} reached: approve no trade for "
                "it; its positions are closed until an admin unlocks it",
        details={"rule": "profit_target/lock", "inputs": inputs})
    out = derived(payload, cause=event, rule="profit_target/lock")
    held = AccountLock(out.event_id, LockKind.PROFIT_TARGET, LockEnd.ADMIN_UNLOCK, event.occurred_at, state.day,
                       trigger=out.event_id)
    return replace(state, lock=held, streaks={}), out


def _unordered(state: DrawdownState, at: datetime, config: GuardSettings) -> list[Held]:
    """Open positions no guard has ordered closed within ``reclose_after_seconds``."""
    window = timedelta(seconds=config.reclose_after_seconds)
    return [h for h in state.positions if h.ticket not in state.ordered or at - state.ordered[h.ticket] >= window]


def _trigger(state: DrawdownState, event: Envelope[AccountReport], confirmed: set[str], m: profiles.Measures,
             levels: AccountLevels, inputs: dict[str, Any], now: datetime) -> tuple[DrawdownState, Envelope[Any]] | None:
    if DRAWDOWN in confirmed:
        kind, reason, value, threshold, what = (AlertType.DRAWDOWN_CRITICAL, CloseReason.DRAWDOWN_GUARD,
                                                m.loss_percent, m.critical, m.what)
    elif DAILY in confirmed:
        kind, reason, value, threshold, what = (AlertType.DAILY_LOSS_CRITICAL, CloseReason.DAILY_LOSS_GUARD,
                                                m.daily_percent, m.daily_limit, "Daily loss")
    else:
        return None
    grace = levels.close_grace_seconds
    # The owner's notice runs from the warning, sent now, not from the report (a late worker would cut it).
    warned_at = max(event.occurred_at, now)
    deadline = warned_at + timedelta(seconds=grace)
    inputs = inputs | {"threshold_percent": threshold, "close_grace_seconds": grace,
                       "deadline": deadline.isoformat(), "warning_at": warned_at.isoformat(),
                       "trigger_event_id": str(event.event_id)}
    # The liquidation's identity is the account's n-th liquidation, not the report that confirmed it: a
    # trigger re-derived from a later report (its first write lost in a restore) is the same alert.
    alert_id = liquidation_id(event.account_id, state.liquidations)
    pending = PendingClose(CauseRef.of(event), kind, reason, deadline, inputs, alert_id)
    alert = guard_alert(event, f"{reason.value}/warning", kind, ActionTaken.WARNING_SENT, status="open",
                   message=f"{what} {value:.2f}% reached the critical level {threshold:g}%: "
                           f"positions close in {grace:g} s", drawdown_percent=value,
                   equity_gbp=inputs["equity_gbp"], threshold_percent=threshold, details=inputs)
    return replace(state, pending=pending, liquidations=state.liquidations + 1), \
        alert.model_copy(update={"event_id": alert_id})

