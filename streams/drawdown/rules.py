"""Drawdown guard: high-water mark, drawdown, daily loss, and the liquidation they trigger.

Pure functions. ``handle(state, event, levels, config, now)`` folds one report into the
account's state and returns the alerts, snapshots and close commands it calls for;
``fire_due(state, now)`` is the same for the clock alone (a pending liquidation whose grace has
run out). The modules beside this one: ``state``, ``readings``, ``levels``, ``liquidation``, ``outputs``.
Rules, in `docs/guard-rules.md`:

- only *good* readings count: not a sync error, not stale (older than the last good one, or
  older than ``max_reading_age_seconds``), not absurd (equity <= 0 while balance > 0, or a jump
  of more than ``max_equity_jump_percent`` from the last good reading with no position or
  balance change, unless the next reading confirms it); bad readings are ignored: they neither
  count towards nor break a confirmation streak;
- a level is breached when ``confirmations`` consecutive good readings are at or beyond it;
- a critical breach (drawdown or daily loss) with open positions raises ``warning_sent`` at once
  and sets a deadline ``close_grace_seconds`` later, fixed then: nothing the owner does, and no
  recovery of equity, moves or cancels it; at the deadline every open position is closed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from infra.settings import AccountLevels, GuardSettings
from schemas import Envelope
from schemas.commands import ClosePosition
from schemas.locks import UnlockAccount
from schemas.reports import AccountReport, AccountSyncFailed, PositionReport
from schemas.results import PositionCloseFailed
from streams.decisions import Decision, replace
from streams.drawdown import lock
from streams.drawdown.levels import assess_levels
from streams.drawdown.liquidation import close_failed_alerts, fire_due
from streams.drawdown.outputs import snapshot, snapshot_due
from streams.drawdown.readings import accept, drawdown_percent, judge
from streams.drawdown.state import DrawdownState, Held, Reading


def handle(state: DrawdownState, event: Envelope[Any], levels: AccountLevels, config: GuardSettings,
           now: datetime) -> Decision[DrawdownState]:
    payload = event.payload
    if isinstance(payload, AccountReport):
        return on_account(state, event, levels, config, now)
    if isinstance(payload, PositionReport):
        return lock.close_new_positions(on_positions(state, event), event, config)
    if isinstance(payload, ClosePosition):
        return lock.on_close_command(state, event)
    if isinstance(payload, UnlockAccount):
        return lock.on_unlock(state, event)
    if isinstance(payload, AccountSyncFailed):
        return on_sync_failed(state, event)
    if isinstance(payload, PositionCloseFailed):
        return Decision(state, close_failed_alerts(event))
    return Decision(state)


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
    return Decision(state, (snapshot(state, event, state.last, drawdown=drawdown_percent(state, state.last)),))


def on_account(state: DrawdownState, event: Envelope[AccountReport], levels: AccountLevels, config: GuardSettings,
               now: datetime) -> Decision[DrawdownState]:
    report = event.payload
    reading = Reading(event.occurred_at, report.equity * report.gbp_rate, report.balance * report.gbp_rate,
                      tuple(sorted(h.ticket for h in state.positions)))
    verdict = judge(state, reading, config, now)
    if verdict == "suspect":
        return Decision(replace(state, suspect=reading))
    if verdict != "good":
        return Decision(state)
    state = accept(state, reading, report, config)
    ended = lock.on_reading(state, event)
    state, outputs = ended.state, list(ended.outputs)
    if not lock.locked(state):  # a locked account starts no new trigger: the lock closes its new positions
        state, alerts = assess_levels(state, event, reading, levels, config)
        outputs += alerts
    if state.pending is not None and state.pending.deadline <= now:
        fired = fire_due(state, now)
        state, outputs = fired.state, outputs + list(fired.outputs)
    if snapshot_due(state, reading, config, bool(outputs)):
        outputs.append(snapshot(state, event, reading, drawdown=drawdown_percent(state, reading)))
        state = replace(state, last_snapshot_at=reading.at)
    return Decision(state, tuple(outputs))

