"""Drawdown guard: high-water mark, drawdown, daily loss, and the liquidation they trigger.

Pure functions. ``handle(state, event, levels, config, now)`` folds one report into the
account's state and returns the alerts, snapshots and close commands it calls for;
``fire_due(state, now)`` is the same for the clock alone (a pending liquidation whose grace has
run out). Rules, in `docs/guard-rules.md`:

- only *good* readings count: not a sync error, not stale (older than the last good one, or
  older than ``max_reading_age_seconds``), not absurd (equity <= 0 while balance > 0, or a jump
  of more than ``max_equity_jump_percent`` from the last good reading with no position or
  balance change, unless the next reading confirms it); bad readings are ignored: they neither
  count towards nor break a confirmation streak;
- a level is breached when ``confirmations`` consecutive good readings are at or beyond it;
- a critical breach (drawdown or daily loss) with open positions raises ``warning_sent`` at once
  and sets a deadline ``close_grace_seconds`` later, fixed then: nothing the owner does, and no
  recovery of equity, moves or cancels it; at the deadline every open position is closed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from schemas import Envelope, derived
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from schemas.decisions import AccountAssessed, ActionTaken, AlertType, GuardAlertRaised
from schemas.reports import AccountReport, AccountSyncFailed, PositionReport
from schemas.results import PositionCloseFailed
from streams.config import AccountLevels, GuardConfig
from streams.decisions import CauseRef, Decision, percent_off, replace


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


@dataclass(frozen=True)
class PendingClose:
    """A triggered liquidation: fixed at the trigger, fired at ``deadline``."""

    cause: CauseRef
    alert_type: AlertType
    reason: CloseReason
    deadline: datetime
    inputs: dict[str, Any]


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
    # Volatile: refreshed by every report; changing them alone does not need a table write.
    positions_at: datetime | None = field(default=None, compare=False)
    last: Reading | None = field(default=None, compare=False)
    suspect: Reading | None = field(default=None, compare=False)
    last_account: dict[str, float] = field(default_factory=dict, compare=False)
    last_snapshot_at: datetime | None = field(default=None, compare=False)


DRAWDOWN, DAILY, WARNING = "drawdown", "daily", "warning"


# ---------------------------------------------------------------------------------------- dispatch

def handle(state: DrawdownState, event: Envelope[Any], levels: AccountLevels, config: GuardConfig,
           now: datetime) -> Decision[DrawdownState]:
    payload = event.payload
    if isinstance(payload, AccountReport):
        return on_account(state, event, levels, config, now)
    if isinstance(payload, PositionReport):
        return Decision(on_positions(state, event))
    if isinstance(payload, AccountSyncFailed):
        return on_sync_failed(state, event)
    if isinstance(payload, PositionCloseFailed):
        return Decision(state, close_failed_alerts(event))
    return Decision(state)


def evolve(state: DrawdownState, event: Envelope[Any], levels: AccountLevels, config: GuardConfig,
           now: datetime) -> DrawdownState:
    return handle(state, event, levels, config, now).state


def decide(state: DrawdownState, event: Envelope[Any], levels: AccountLevels, config: GuardConfig,
           now: datetime) -> list[Envelope[Any]]:
    return list(handle(state, event, levels, config, now).outputs)


# ------------------------------------------------------------------------------------- positions

def on_positions(state: DrawdownState, event: Envelope[PositionReport]) -> DrawdownState:
    if state.positions_at is not None and event.occurred_at <= state.positions_at:
        return state  # a redelivered or out-of-order report
    held = tuple(Held(p.ticket, p.symbol, p.volume, p.profit_gbp) for p in event.payload.positions)
    live = {h.ticket for h in held}
    ordered = state.ordered if all(t in live for t in state.ordered) else \
        {t: at for t, at in state.ordered.items() if t in live}
    # Same tickets: only the P&L moved, and Held ignores P&L in comparisons, so no table write.
    return replace(state, positions=held, positions_at=event.occurred_at, ordered=ordered)


def on_sync_failed(state: DrawdownState, event: Envelope[AccountSyncFailed]) -> Decision[DrawdownState]:
    """A sync error is never a reading: it counts for nothing, and shows in the snapshot."""
    f = event.payload
    error = f"{f.stage} failed ({f.error_code}): {f.error_message}"[:1000]
    if state.sync_error is not None or state.last is None:
        return Decision(replace(state, sync_error=error) if state.sync_error is None else state)
    state = replace(state, sync_error=error)
    return Decision(state, (_snapshot(state, event, state.last, drawdown=_drawdown(state, state.last)),))


# ------------------------------------------------------------------------------------- readings

def on_account(state: DrawdownState, event: Envelope[AccountReport], levels: AccountLevels, config: GuardConfig,
               now: datetime) -> Decision[DrawdownState]:
    report = event.payload
    reading = Reading(event.occurred_at, report.equity * report.gbp_rate, report.balance * report.gbp_rate,
                      tuple(sorted(h.ticket for h in state.positions)))
    verdict = judge(state, reading, config, now)
    if verdict == "suspect":
        return Decision(replace(state, suspect=reading))
    if verdict != "good":
        return Decision(state)
    state = _accept(state, reading, report, config)
    outputs: list[Envelope[Any]] = []
    state, alerts = _assess_levels(state, event, reading, levels, config)
    outputs += alerts
    if state.pending is not None and state.pending.deadline <= now:
        fired = fire_due(state, now)
        state, outputs = fired.state, outputs + list(fired.outputs)
    if _snapshot_due(state, reading, config, bool(outputs)):
        outputs.append(_snapshot(state, event, reading, drawdown=_drawdown(state, reading)))
        state = replace(state, last_snapshot_at=reading.at)
    return Decision(state, tuple(outputs))


def judge(state: DrawdownState, reading: Reading, config: GuardConfig, now: datetime) -> str:
    """``good``, ``stale``, ``absurd`` or ``suspect`` (a jump kept until the next reading confirms it)."""
    if not (math.isfinite(reading.equity_gbp) and math.isfinite(reading.balance_gbp)):
        return "absurd"
    if reading.equity_gbp <= 0 < reading.balance_gbp:
        return "absurd"
    last = state.last
    if last is not None and reading.at <= last.at:
        return "stale"
    if config.max_reading_age_seconds is not None and \
            (now - reading.at).total_seconds() > config.max_reading_age_seconds:
        return "stale"
    if last is None or not _jumped(last, reading, config):
        return "good"
    suspect = state.suspect
    if suspect is not None and suspect.at < reading.at and not _jumped(suspect, reading, config):
        return "good"  # two readings in a row agree on the new level: it is real
    return "suspect"


def _jumped(before: Reading, after: Reading, config: GuardConfig) -> bool:
    unexplained = after.tickets == before.tickets and abs(after.balance_gbp - before.balance_gbp) < 0.01
    return unexplained and percent_off(after.equity_gbp, before.equity_gbp) > config.max_equity_jump_percent


def _accept(state: DrawdownState, reading: Reading, report: AccountReport, config: GuardConfig) -> DrawdownState:
    peak = reading.equity_gbp if state.peak_equity_gbp is None else max(state.peak_equity_gbp, reading.equity_gbp)
    day = day_of(report, reading.at, config)
    day_start = state.day_start_equity_gbp if day == state.day else reading.equity_gbp
    streaks = state.streaks if day == state.day else {k: v for k, v in state.streaks.items() if k != DAILY}
    account = {"margin": report.margin * report.gbp_rate, "equity": reading.equity_gbp}
    return replace(state, peak_equity_gbp=peak, day=day, day_start_equity_gbp=day_start, streaks=streaks,
                   last=reading, suspect=None, sync_error=None, last_account=account)


def day_of(report: AccountReport, at: datetime, config: GuardConfig) -> str:
    """The trading day a reading belongs to: broker-server clock by default, shifted by the reset time."""
    clock = report.server_time or at
    if config.daily_reset_timezone is not None:
        clock = clock.astimezone(ZoneInfo(config.daily_reset_timezone))
    reset = config.daily_reset_time
    shifted = clock - timedelta(hours=reset.hour, minutes=reset.minute, seconds=reset.second)
    return shifted.date().isoformat()


def _drawdown(state: DrawdownState, reading: Reading) -> float:
    peak = state.peak_equity_gbp or 0.0
    return max(0.0, (peak - reading.equity_gbp) / peak * 100) if peak > 0 else 0.0


def _daily_loss(state: DrawdownState, reading: Reading) -> tuple[float, float]:
    start = state.day_start_equity_gbp or 0.0
    loss = max(0.0, start - reading.equity_gbp)
    return loss, (loss / start * 100 if start > 0 else 0.0)


# ---------------------------------------------------------------------------------------- levels

def _assess_levels(state: DrawdownState, event: Envelope[AccountReport], reading: Reading, levels: AccountLevels,
                   config: GuardConfig) -> tuple[DrawdownState, list[Envelope[Any]]]:
    drawdown = _drawdown(state, reading)
    loss_gbp, loss_percent = _daily_loss(state, reading)
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
        trigger = _trigger(state, event, confirmed, drawdown, loss_percent, levels, inputs)
        if trigger is not None:
            state, alert = trigger
            outputs.append(alert)
    if WARNING in confirmed and not state.warning_active:
        state = replace(state, warning_active=True)
        if not outputs:  # a critical alert said more already
            outputs.append(_alert(event, "drawdown/warning", AlertType.DRAWDOWN_WARNING, ActionTaken.WARNING_SENT,
                                  status="open", message=f"Drawdown {drawdown:.2f}% reached the warning level "
                                  f"{levels.warning_drawdown_percent:g}%", drawdown_percent=drawdown,
                                  equity_gbp=reading.equity_gbp, threshold_percent=levels.warning_drawdown_percent,
                                  details=inputs))
    elif drawdown < levels.warning_drawdown_percent and state.warning_active:
        state = replace(state, warning_active=False)  # re-armed: the next crossing warns again
    return state, outputs


def _inputs(state: DrawdownState, reading: Reading, drawdown: float, loss_gbp: float, loss_percent: float,
            levels: AccountLevels, config: GuardConfig) -> dict[str, Any]:
    """What an alert or close records of the reading and levels that produced it."""
    return {"equity_gbp": round(reading.equity_gbp, 4), "peak_equity_gbp": round(state.peak_equity_gbp or 0, 4),
            "drawdown_percent": round(drawdown, 4), "day": state.day,
            "day_start_equity_gbp": round(state.day_start_equity_gbp or 0, 4),
            "daily_loss_gbp": round(loss_gbp, 4), "daily_loss_percent": round(loss_percent, 4),
            "confirmations": config.confirmations, "reading_at": reading.at.isoformat(),
            "levels": levels.model_dump()}


def _unordered(state: DrawdownState, at: datetime, config: GuardConfig) -> list[Held]:
    """Open positions no guard has ordered closed within ``reclose_after_seconds``."""
    window = timedelta(seconds=config.reclose_after_seconds)
    return [h for h in state.positions if h.ticket not in state.ordered or at - state.ordered[h.ticket] >= window]


def _trigger(state: DrawdownState, event: Envelope[AccountReport], confirmed: set[str], drawdown: float,
             loss_percent: float, levels: AccountLevels, inputs: dict[str, Any]
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
    deadline = event.occurred_at + timedelta(seconds=grace)
    inputs = inputs | {"threshold_percent": threshold, "close_grace_seconds": grace,
                       "deadline": deadline.isoformat(), "trigger_event_id": str(event.event_id)}
    pending = PendingClose(CauseRef.of(event), kind, reason, deadline, inputs)
    alert = _alert(event, f"{reason.value}/warning", kind, ActionTaken.WARNING_SENT, status="open",
                   message=f"{what} {value:.2f}% reached the critical level {threshold:g}%: "
                           f"positions close in {grace:g} s", drawdown_percent=value,
                   equity_gbp=inputs["equity_gbp"], threshold_percent=threshold, details=inputs)
    return replace(state, pending=pending), alert


# ------------------------------------------------------------------------------------ liquidation

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


# --------------------------------------------------------------------------------------- outputs

def _alert(event: Envelope[Any], rule: str, kind: AlertType, action: ActionTaken, **fields: Any) -> Envelope[Any]:
    return derived(GuardAlertRaised(user_id=event.account_id, alert_type=kind, action_taken=action, **fields),
                   cause=event, rule=rule)


def _snapshot_due(state: DrawdownState, reading: Reading, config: GuardConfig, decided: bool) -> bool:
    last = state.last_snapshot_at
    return decided or last is None or (reading.at - last).total_seconds() >= config.snapshot_interval_seconds


def _snapshot(state: DrawdownState, event: Envelope[Any], reading: Reading, *, drawdown: float) -> Envelope[Any]:
    equity = reading.equity_gbp
    margin = state.last_account.get("margin", 0.0)
    assessed = AccountAssessed(
        user_id=event.account_id, equity_gbp=round(equity, 4), balance_gbp=round(reading.balance_gbp, 4),
        peak_equity_gbp=round(state.peak_equity_gbp or equity, 4), drawdown_percent=round(drawdown, 4),
        daily_loss_gbp=round(_daily_loss(state, reading)[0], 4), open_positions_count=len(state.positions),
        total_volume_lots=round(sum(h.volume for h in state.positions), 4),
        open_pnl_gbp=round(sum(h.profit_gbp for h in state.positions), 4),
        margin_used_percent=round(margin / equity * 100, 4) if equity > 0 else 0.0,
        last_sync_at=reading.at, sync_error=state.sync_error)
    return derived(assessed, cause=event, rule="drawdown/assessed")

