"""Reconciliation: what the platform approved against what the terminal holds, per account.

Pure functions: ``handle(state, event, config)`` returns the next state and the outcome records
(one ``reconciliation_logs`` row each). The clock is the event's own time, so a replay of the
same log gives the same outcomes with the same ids.

The modules beside this one: ``state`` (what is kept), ``matching`` (binding trades to positions),
``outcomes`` (what diverges at a report), ``records`` (the rows).

Matching an approved trade to a position, first rule that applies:
1. the platform's ``mt5_position_id`` equals the ticket;
2. the ticket bound by an earlier match (a binding never changes);
3. the position's comment equals the first 29 characters of ``signal_id`` (the platform writes
   the signal id into the MT5 order comment, which MT5 cuts short);
4. an unbound position of the same symbol opened within ``match_window_seconds`` of the approval,
   preferring the same direction, then the nearest volume, then the nearest time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from infra.settings import GuardSettings
from schemas import Envelope, derived
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from schemas.decisions import (
    BindingEvidence,
    DivergenceReason,
    DivergenceResolved,
    Matched,
    PositionCloseRecorded,
    ReconciliationIndeterminate,
    ReconciliationStatus,
)
from schemas.platform import TradeApproved, TradeClosedByPlatform
from schemas.reports import AccountSyncFailed, ObservedPosition, PositionReport
from schemas.results import CloseOutcome, PositionClosed
from streams.decisions import Decision, replace
from streams.reconciliation.matching import bind, closing_deals, firm, note_partial_closes
from streams.reconciliation.outcomes import compare, diff_divergences, reconcile_trade, unexpected
from streams.reconciliation.records import binding_revised, pnl_percent, trade_record
from streams.reconciliation.state import Condition, ExpectedTrade, Held, ReconciliationState

_GUARD_REASONS = frozenset({CloseReason.DRAWDOWN_GUARD, CloseReason.DAILY_LOSS_GUARD, CloseReason.MARKET_GAP,
                            CloseReason.SPREAD, CloseReason.STALE_FEED, CloseReason.ACCOUNT_LOCKED})


def handle(state: ReconciliationState, event: Envelope[Any], config: GuardSettings) -> Decision[ReconciliationState]:
    payload = event.payload
    if isinstance(payload, PositionReport):
        return on_positions(state, event, config)
    if isinstance(payload, TradeApproved):
        return Decision(on_approved(state, event))
    if isinstance(payload, TradeClosedByPlatform):
        return on_platform_close(state, event)
    if isinstance(payload, AccountSyncFailed):
        return on_sync_failed(state, event)
    if isinstance(payload, ClosePosition):
        return Decision(on_close_command(state, payload))
    if isinstance(payload, CloseOutcome):
        return Decision(on_close_result(state, payload), close_records(state, event))
    return Decision(state)


def on_approved(state: ReconciliationState, event: Envelope[TradeApproved]) -> ReconciliationState:
    a = event.payload
    if a.approval_id in state.expected:
        return state  # a redelivery, or a re-approval of the same trade: the first one stands
    trade = ExpectedTrade(a.approval_id, a.signal_id, a.symbol, a.direction, a.volume, a.entry_price,
                          a.stop_loss, a.take_profit, event.occurred_at, ticket=a.mt5_position_id,
                          evidence=BindingEvidence.TICKET if a.mt5_position_id is not None else None)
    return replace(state, expected={**state.expected, a.approval_id: trade})


def on_platform_close(state: ReconciliationState, event: Envelope[TradeClosedByPlatform]
                      ) -> Decision[ReconciliationState]:
    c = event.payload
    trade = state.expected.get(c.approval_id)
    if trade is None or trade.done_at is not None and trade.platform_closed_all:
        return Decision(state)
    at = event.occurred_at
    if c.volume is None or c.volume >= trade.open_volume - 1e-9:
        trade = replace(trade, platform_closed_all=True, platform_closed_at=at)
        if trade.ticket is None and c.mt5_position_id is not None:
            trade = replace(trade, ticket=c.mt5_position_id, evidence=BindingEvidence.TICKET)
    else:
        held = state.held.get(trade.ticket) if trade.ticket is not None else None
        trade = replace(trade, platform_closed_volume=trade.platform_closed_volume + c.volume, platform_closed_at=at,
                        held_at_platform_close=held.volume if held is not None else None)
    state = replace(state, expected={**state.expected, c.approval_id: trade})
    # The platform acknowledging a close it did not make resolves the "closed outside" record.
    outputs = [trade_record(DivergenceResolved, event, f"platform-ack/{key}", trade, None, matched=Matched.MATCHED,
                       status=ReconciliationStatus.MATCHED, divergence_reason=d.reason, divergence_since=d.since)
               for key, d in state.divergences.items() if d.approval_id == c.approval_id and d.reason in
               (DivergenceReason.CLOSED_OUTSIDE_PLATFORM, DivergenceReason.GAP)]
    divergences = {k: d for k, d in state.divergences.items()
                   if not (d.approval_id == c.approval_id and d.reason in
                           (DivergenceReason.CLOSED_OUTSIDE_PLATFORM, DivergenceReason.GAP))}
    return Decision(replace(state, divergences=divergences), tuple(outputs))


def on_sync_failed(state: ReconciliationState, event: Envelope[AccountSyncFailed]) -> Decision[ReconciliationState]:
    """The terminal could not be read: the account is indeterminate (never flat, never closed)."""
    if state.indeterminate_since is not None:
        return Decision(state)  # already reported; one row per outage, not one per poll
    f = event.payload
    record = ReconciliationIndeterminate(
        user_id=f.user_id, matched=Matched.INDETERMINATE, status=ReconciliationStatus.FAILED,
        error_message=f"{f.stage} failed ({f.error_code}): {f.error_message}"[:2000],
        details={"stage": f.stage, "error_code": f.error_code, "poll_seq": f.poll_seq,
                 "open_positions_last_seen": sorted(state.held)})
    outputs = (derived(record, cause=event, rule="reconciliation/indeterminate"),)
    return Decision(replace(state, indeterminate_since=event.occurred_at), outputs)


def on_close_command(state: ReconciliationState, command: ClosePosition) -> ReconciliationState:
    """Our guards ordered these tickets closed: their disappearance is not a divergence."""
    added = {t: command.reason.value for t in command.tickets if state.guard_closing.get(t) != command.reason.value}
    return replace(state, guard_closing={**state.guard_closing, **added}) if added else state


def on_close_result(state: ReconciliationState, r: CloseOutcome) -> ReconciliationState:
    """A guard close the executor confirmed is the guard's, whether or not its command was read first
    (commands and results are two topics, read in no set order, and a restart re-reads either); a guard
    close that failed leaves the ticket open: whatever closes it later is recorded as it happens."""
    if isinstance(r, PositionClosed):
        if r.reason not in _GUARD_REASONS or state.guard_closing.get(r.ticket) == r.reason.value:
            return state
        return replace(state, guard_closing={**state.guard_closing, r.ticket: r.reason.value})
    if r.ticket not in state.guard_closing:
        return state
    return replace(state, guard_closing={t: why for t, why in state.guard_closing.items() if t != r.ticket})


def close_records(state: ReconciliationState, event: Envelope[CloseOutcome]) -> tuple[Envelope[Any], ...]:
    """A guard close as executed (success) or not (failed): one reconciliation_logs row per ticket,
    naming the approved trade the ticket was bound to, if any."""
    r = event.payload
    if r.reason not in _GUARD_REASONS:
        return ()
    trade = next((t for t in state.expected.values() if t.ticket == r.ticket), None)
    closed = isinstance(r, PositionClosed)
    percent = pnl_percent(r.direction, r.entry_price, r.price) if closed else None
    record = PositionCloseRecorded(
        user_id=r.user_id, matched=Matched.MATCHED if closed else Matched.DIVERGENCE,
        status=ReconciliationStatus.SUCCESS if closed else ReconciliationStatus.FAILED,
        mt5_position_id=r.ticket, signal_id=trade.signal_id if trade else None,
        approval_id=trade.approval_id if trade else None, symbol=r.symbol, direction=r.direction, volume=r.volume,
        entry_price=r.entry_price, close_reason=r.reason, closed_price=r.price if closed else None,
        pnl_gbp=r.pnl_gbp, pnl_percent=percent, error_message=r.error_message,
        details={"command_id": str(r.command_id), "retcode": r.retcode, "attempts": r.attempts})
    return (derived(record, cause=event, rule="reconciliation/close-recorded"),)


def on_positions(state: ReconciliationState, event: Envelope[PositionReport], config: GuardSettings
                 ) -> Decision[ReconciliationState]:
    at = event.occurred_at
    if state.indeterminate_since is not None and at <= state.indeterminate_since:
        return Decision(state)  # older than the outage: says nothing about the account now
    if state.positions_at is not None and at <= state.positions_at:
        # Redelivered (a worker restored from a changelog ahead of its committed offset) or out of order:
        # an older view of the terminal would report a closed position as unexpected, then resolve it.
        return Decision(state)
    report = event.payload
    observed = {p.ticket: p for p in report.positions}
    if not report.closed_deals and _quiet(state, observed, at, config):
        return Decision(state)  # most reports: the long way below would conclude the same
    deals = closing_deals(report.closed_deals)
    expected, revisions = bind(state.expected, observed, config)
    expected = note_partial_closes(expected, deals, observed)
    outputs: list[Envelope[Any]] = [binding_revised(expected[r.approval_id], r, event, observed) for r in revisions]
    conditions: list[Condition] = []
    for approval_id, trade in list(expected.items()):
        if trade.done_at is not None:
            continue
        trade, produced, found = reconcile_trade(trade, observed, deals, state, event, config)
        expected[approval_id] = trade
        outputs += produced
        conditions += found
    bound = {t.ticket for t in expected.values() if t.ticket is not None and t.done_at is None}
    conditions += [unexpected(p) for p in observed.values()
                   if p.ticket not in bound and p.ticket not in state.guard_closing
                   and (at - p.opened_at).total_seconds() >= config.unexpected_after_seconds]
    divergences, changes = diff_divergences(state.divergences, conditions, event, at, expected=expected, observed=observed)
    # Keep the same objects where nothing changed: an unchanged state is the same state (no table write,
    # no deep comparison).
    held = _held(state.held, observed)
    expected = _same_or(state.expected, _prune(expected, at, config))
    divergences = _same_or(state.divergences, divergences)
    guard_closing = state.guard_closing
    if guard_closing and not all(t in observed for t in guard_closing):  # forget the closes that are done
        guard_closing = {t: r for t, r in guard_closing.items() if t in observed}
    if expected is state.expected and held is state.held and divergences is state.divergences and \
            guard_closing is state.guard_closing and state.indeterminate_since is None:
        return Decision(state, tuple(changes + outputs))
    new_state = ReconciliationState(expected=expected, held=held, divergences=divergences,
                                    guard_closing=guard_closing, indeterminate_since=None, positions_at=at)
    return Decision(new_state, tuple(changes + outputs))


def _quiet(state: ReconciliationState, observed: dict[int, ObservedPosition], at: datetime,
           config: GuardSettings) -> bool:
    """Whether a report without deals would leave ``state`` as it is and say nothing (most reports).

    So when nothing the long way reads has changed or is timed: the same positions as held; no outage
    to end; every open trade firmly bound to one of them, matched already and not closed by the
    platform (no binding to revise, no record to make, no timed condition); every position bound or
    being closed by a guard (no unexpected one); no finished trade due to be forgotten; and what
    ``compare`` finds now is exactly what is open already (nothing detected, nothing resolved)."""
    held = state.held
    if state.indeterminate_since is not None or _held(held, observed) is not held:
        return False
    for ticket in state.guard_closing:
        if ticket not in observed:
            return False
    horizon = at - timedelta(seconds=config.closed_trade_retention_seconds)
    bound: set[int] = set()
    found: set[str] = set()
    for trade in state.expected.values():
        if trade.done_at is not None:
            if trade.done_at <= horizon:
                return False
            continue
        ticket = trade.ticket
        if ticket not in held or not trade.matched_once or trade.platform_closed_all or \
                trade.platform_closed_at is not None or not firm(trade):
            return False
        bound.add(ticket)
        found |= _found(trade, held[ticket], observed[ticket], config, at)
    return _only_open(state, bound, found)


def _only_open(state: ReconciliationState, bound: set[int], found: set[str]) -> bool:
    """No position unexpected (each ``bound`` or being closed by a guard), and the divergences ``found``
    exactly the ones open (a close record stays open until the platform acknowledges it)."""
    for ticket in state.held:
        if ticket not in bound and ticket not in state.guard_closing:
            return False
    divergences = state.divergences
    for key in found:
        if key not in divergences:
            return False
    for key, d in divergences.items():
        if key not in found and d.reason is not DivergenceReason.CLOSED_OUTSIDE_PLATFORM and \
                d.reason is not DivergenceReason.GAP:
            return False
    return True


def _found(trade: ExpectedTrade, held: Held, position: ObservedPosition, config: GuardSettings,
           at: datetime) -> frozenset[str]:
    """The keys of what ``compare`` finds between a trade not closed by the platform (nothing timed) and
    its position, as ``held`` still is. Kept on ``held`` (in its instance dict, not a field: never stored
    nor compared) for the same trade and config, as every quiet report asks it again; a changed trade
    is another object, and a changed position another ``Held``."""
    known = held.__dict__.get("_found")
    if known is not None and known[0] is trade and known[1] is config:
        return known[2]  # type: ignore[no-any-return]
    keys = frozenset(c.key for c in compare(trade, position, config, at))
    held.__dict__["_found"] = (trade, config, keys)
    return keys


def _same_or(before: dict[Any, Any], after: dict[Any, Any]) -> dict[Any, Any]:
    """``before`` if ``after`` holds the same items (compared by identity first), else ``after``."""
    if before is after:
        return before
    if len(before) != len(after):
        return after
    for key, value in after.items():
        old = before.get(key, _ABSENT)
        if old is not value and old != value:
            return after
    return before


_ABSENT = object()


def _held(before: dict[int, Held], observed: dict[int, ObservedPosition]) -> dict[int, Held]:
    """The positions' stable parts: ``before`` itself when none changed (most reports), built anew otherwise."""
    if len(before) == len(observed):
        for ticket, p in observed.items():
            old = before.get(ticket)
            if old is None or not old.same_as(p):
                break
        else:
            return before
    return {t: Held.of(p) for t, p in observed.items()}


def _prune(expected: dict[str, ExpectedTrade], at: datetime, config: GuardSettings) -> dict[str, ExpectedTrade]:
    """Forget finished trades after the retention period, so state stays bounded (``expected`` itself
    when no trade is finished: most reports)."""
    for trade in expected.values():
        if trade.done_at is not None:
            break
    else:
        return expected
    horizon = at - timedelta(seconds=config.closed_trade_retention_seconds)
    return {k: t for k, t in expected.items() if t.done_at is None or t.done_at > horizon}

