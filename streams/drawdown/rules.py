"""Drawdown guard: high-water mark, drawdown, daily loss, and the liquidation they trigger.

Pure functions. ``handle(state, event, levels, config, now)`` folds one report into the
account's state and returns the alerts, snapshots and close commands it calls for;
``fire_due(state, now)`` is the same for the clock alone (a pending liquidation whose grace has
run out). The modules beside this one: ``state``, ``readings``, ``levels``, ``liquidation``, ``outputs``.
Rules, in `docs/guard-rules.md`:

- money flows (deposits, withdrawals, credit, bonus: ``AccountReport.money_flows``) are not
  trading results: they scale the peak and the day's start (``readings.apply_flows``) before the
  reading that contains them is judged;
- only *trusted* readings count: not a sync error, not stale (older than the last trusted one, or
  older than ``max_reading_age_seconds``), not absurd (equity <= 0 while balance > 0), consistent
  (equity = balance + credit + the positions' profit within ``consistency_tolerance_percent``),
  and no unexplained jump (equity beyond ``max_equity_jump_percent`` with no position or balance
  change, or the GBP rate beyond ``max_rate_move_percent``) unless the next reading confirms it;
  untrusted readings neither count towards nor break a streak, and are counted (a metric, and
  the next snapshot);
- a new peak and a day's baseline each need ``confirmations`` trusted readings (the lowest of
  them), and a level is breached when ``confirmations`` consecutive trusted readings are at or
  beyond it;
- a critical breach (drawdown or daily loss) with open positions raises ``warning_sent`` at once
  and sets a deadline ``close_grace_seconds`` after the warning (not after the report: a worker that
  was down must not cut the owner's notice), fixed then: nothing the owner does, and no
  recovery of equity, moves or cancels it; at the deadline every open position is closed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from infra.metrics import guard_untrusted_readings_total
from infra.settings import AccountLevels, GuardSettings
from schemas import Envelope
from schemas.commands import ClosePosition
from schemas.locks import UnlockAccount
from schemas.reports import AccountReport, AccountSyncFailed, PositionReport
from streams.decisions import Decision, replace
from streams.drawdown import lock
from streams.drawdown.levels import assess_levels
from streams.drawdown.liquidation import fire_due, on_own_command
from streams.drawdown.outputs import snapshot, snapshot_due
from streams.drawdown.profiles import label
from streams.drawdown.readings import SUSPECT, TRUSTED, accept, apply_flows, drawdown_percent, judge
from streams.drawdown.state import DrawdownState, Held, Reading


def handle(state: DrawdownState, event: Envelope[Any], levels: AccountLevels, config: GuardSettings,
           now: datetime) -> Decision[DrawdownState]:
    payload = event.payload
    if isinstance(payload, AccountReport):
        return on_account(state, event, levels, config, now)
    if isinstance(payload, PositionReport):
        if state.positions_at is not None and event.occurred_at <= state.positions_at:
            return Decision(state)  # redelivered or out of order: its positions are not the account's now
        return lock.close_new_positions(on_positions(state, event), event, config)
    if isinstance(payload, ClosePosition):
        return lock.on_close_command(on_own_command(state, event), event)
    if isinstance(payload, UnlockAccount):
        return lock.on_unlock(state, event)
    if isinstance(payload, AccountSyncFailed):
        return on_sync_failed(state, event)
    return Decision(state)


def on_positions(state: DrawdownState, event: Envelope[PositionReport]) -> DrawdownState:
    if state.positions_at is not None and event.occurred_at <= state.positions_at:
        return state  # a redelivered or out-of-order report
    held = tuple([Held(p.ticket, p.symbol, p.volume, p.profit_gbp) for p in event.payload.positions])
    ordered = state.ordered
    if ordered:  # forget the orders of tickets that are gone
        live = {h.ticket for h in held}
        if not all(t in live for t in ordered):
            ordered = {t: at for t, at in ordered.items() if t in live}
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


def on_untrusted(state: DrawdownState, event: Envelope[AccountReport], reading: Reading, verdict: str,
                 config: GuardSettings) -> Decision[DrawdownState]:
    """Counted and shown (a snapshot of the last trusted reading, due ones only), never used."""
    guard_untrusted_readings_total.labels(reason=verdict).inc()  # the rules' one side effect: a counter
    state = replace(state, untrusted=state.untrusted + 1, suspect=reading if verdict == SUSPECT else state.suspect)
    last = state.last
    if last is None or not snapshot_due(state, reading, config, False):
        return Decision(state)
    note = f"untrusted reading at {reading.at.isoformat()} ({verdict}); {state.untrusted} so far"
    shown = snapshot(replace(state, sync_error=state.sync_error or note), event, last,
                     drawdown=drawdown_percent(state, last))
    return Decision(replace(state, last_snapshot_at=reading.at), (shown,))


def on_account(state: DrawdownState, event: Envelope[AccountReport], levels: AccountLevels, config: GuardSettings,
               now: datetime) -> Decision[DrawdownState]:
    report = event.payload
    reading = Reading(event.occurred_at, report.equity * report.gbp_rate, report.balance * report.gbp_rate,
                      tuple(sorted([h.ticket for h in state.positions])), report.gbp_rate)
    if report.money_flows:  # most reports carry none, and then there is nothing to apply
        state = apply_flows(state, report, config)
    named_profile = config.profile(levels.profile)
    named = label(*named_profile)
    if state.profile != named:  # volatile: snapshots name the profile (the same one, reading after reading)
        state = replace(state, profile=named)
    verdict = judge(state, reading, report, config, now)
    if verdict != TRUSTED:
        return on_untrusted(state, event, reading, verdict, config)
    state = accept(state, reading, report, config)
    ended = lock.on_reading(state, event)
    state, outputs = ended.state, list(ended.outputs)  # not list[Envelope[Any]](): a generic per call
    if not lock.locked(state):  # a locked account starts no new trigger: the lock closes its new positions
        state, alerts = assess_levels(state, event, reading, levels, config, now, named_profile)
        outputs += alerts
    if state.pending is not None and state.pending.deadline <= now:
        fired = fire_due(state, now)
        state, outputs = fired.state, outputs + list(fired.outputs)
    if snapshot_due(state, reading, config, bool(outputs)):
        outputs.append(snapshot(state, event, reading, drawdown=drawdown_percent(state, reading)))
        state = replace(state, last_snapshot_at=reading.at)
    return Decision(state, tuple(outputs))

