"""Reconciliation: what the platform approved against what the terminal holds, per account.

Pure functions: ``handle(state, event, config)`` returns the next state and the outcome records
(one ``reconciliation_logs`` row each). The clock is the event's own time, so a replay of the
same log gives the same outcomes with the same ids.

Matching an approved trade to a position, first rule that applies:
1. the platform's ``mt5_position_id`` equals the ticket;
2. the ticket bound by an earlier match (a binding never changes);
3. the position's comment equals the first 29 characters of ``signal_id`` (the platform writes
   the signal id into the MT5 order comment, which MT5 cuts short);
4. an unbound position of the same symbol opened within ``match_window_seconds`` of the approval,
   preferring the same direction, then the nearest volume, then the nearest time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from schemas import Envelope, derived
from schemas.common import CloseReason, DealEntry, DealReason, Direction
from schemas.decisions import (
    DivergenceDetected,
    DivergenceReason,
    DivergenceResolved,
    Matched,
    PositionCloseRecorded,
    PositionMatched,
    ReconciliationIndeterminate,
    ReconciliationRecord,
    ReconciliationStatus,
)
from schemas.commands import ClosePosition
from schemas.platform import TradeApproved, TradeClosedByPlatform
from schemas.reports import AccountSyncFailed, ObservedDeal, ObservedPosition, PositionReport
from schemas.results import CloseOutcome, PositionClosed
from streams.config import GuardConfig
from streams.decisions import Decision, percent_off, replace

COMMENT_KEY_LENGTH = 29
TERMINAL = "__terminal_since__"  # marks a condition already published as a close record
_CLOSING_ENTRIES = frozenset({DealEntry.OUT, DealEntry.OUT_BY, DealEntry.INOUT})
_CLOSE_REASON_OF_DEAL = {DealReason.SL: CloseReason.SL, DealReason.TP: CloseReason.TP,
                         DealReason.STOP_OUT: CloseReason.STOP_OUT}
_GUARD_REASONS = frozenset({CloseReason.DRAWDOWN_GUARD, CloseReason.DAILY_LOSS_GUARD, CloseReason.MARKET_GAP,
                            CloseReason.SPREAD, CloseReason.STALE_FEED})


@dataclass(frozen=True)
class ExpectedTrade:
    approval_id: str
    signal_id: str
    symbol: str
    direction: Direction
    volume: float
    entry_price: float
    stop_loss: float | None
    take_profit: float | None
    approved_at: datetime
    ticket: int | None = None
    platform_closed_volume: float = 0.0
    platform_closed_all: bool = False
    partially_closed: bool = False
    matched_once: bool = False
    done_at: datetime | None = None

    @property
    def open_volume(self) -> float:
        return self.volume - self.platform_closed_volume


@dataclass(frozen=True)
class Held:
    """The stable part of an observed position (prices and P&L move every poll and are not kept)."""

    ticket: int
    symbol: str
    direction: Direction
    volume: float
    price_open: float
    sl: float | None
    tp: float | None
    comment: str
    opened_at: datetime

    @classmethod
    def of(cls, p: ObservedPosition) -> "Held":
        return cls(p.ticket, p.symbol, p.direction, p.volume, p.price_open, p.sl, p.tp, p.comment, p.opened_at)


@dataclass(frozen=True)
class OpenDivergence:
    reason: DivergenceReason
    since: datetime
    approval_id: str | None = None
    ticket: int | None = None


@dataclass(frozen=True)
class ReconciliationState:
    expected: dict[str, ExpectedTrade] = field(default_factory=dict)
    held: dict[int, Held] = field(default_factory=dict)
    divergences: dict[str, OpenDivergence] = field(default_factory=dict)
    guard_closing: dict[int, str] = field(default_factory=dict)
    indeterminate_since: datetime | None = None


@dataclass(frozen=True)
class _Condition:
    """A divergence that holds at this report, with the record that describes it."""

    reason: DivergenceReason
    approval_id: str | None
    ticket: int | None
    fields: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.reason.value}|{self.approval_id or ''}|{self.ticket or ''}"


# ---------------------------------------------------------------------------------------- dispatch

def handle(state: ReconciliationState, event: Envelope[Any], config: GuardConfig) -> Decision[ReconciliationState]:
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
        return Decision(state, close_records(state, event))
    return Decision(state)


def evolve(state: ReconciliationState, event: Envelope[Any], config: GuardConfig) -> ReconciliationState:
    return handle(state, event, config).state


def decide(state: ReconciliationState, event: Envelope[Any], config: GuardConfig) -> list[Envelope[Any]]:
    return list(handle(state, event, config).outputs)


# ------------------------------------------------------------------------------------ simple events

def on_approved(state: ReconciliationState, event: Envelope[TradeApproved]) -> ReconciliationState:
    a = event.payload
    if a.approval_id in state.expected:
        return state  # a redelivery, or a re-approval of the same trade: the first one stands
    trade = ExpectedTrade(a.approval_id, a.signal_id, a.symbol, a.direction, a.volume, a.entry_price,
                          a.stop_loss, a.take_profit, event.occurred_at, ticket=a.mt5_position_id)
    return replace(state, expected={**state.expected, a.approval_id: trade})


def on_platform_close(state: ReconciliationState, event: Envelope[TradeClosedByPlatform]
                      ) -> Decision[ReconciliationState]:
    c = event.payload
    trade = state.expected.get(c.approval_id)
    if trade is None or trade.done_at is not None and trade.platform_closed_all:
        return Decision(state)
    if c.volume is None or c.volume >= trade.open_volume - 1e-9:
        trade = replace(trade, platform_closed_all=True, ticket=trade.ticket or c.mt5_position_id)
    else:
        trade = replace(trade, platform_closed_volume=trade.platform_closed_volume + c.volume)
    state = replace(state, expected={**state.expected, c.approval_id: trade})
    # The platform acknowledging a close it did not make resolves the "closed outside" record.
    outputs = [_record(DivergenceResolved, event, f"platform-ack/{key}", trade, None, matched=Matched.MATCHED,
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


def close_records(state: ReconciliationState, event: Envelope[CloseOutcome]) -> tuple[Envelope[Any], ...]:
    """A guard close as executed (success) or not (failed): one reconciliation_logs row per ticket,
    naming the approved trade the ticket was bound to, if any."""
    r = event.payload
    if r.reason not in _GUARD_REASONS:
        return ()
    trade = next((t for t in state.expected.values() if t.ticket == r.ticket), None)
    closed = isinstance(r, PositionClosed)
    pnl_percent = _pnl_percent(r.direction, r.entry_price, r.price) if closed else None
    record = PositionCloseRecorded(
        user_id=r.user_id, matched=Matched.MATCHED if closed else Matched.DIVERGENCE,
        status=ReconciliationStatus.SUCCESS if closed else ReconciliationStatus.FAILED,
        mt5_position_id=r.ticket, signal_id=trade.signal_id if trade else None,
        approval_id=trade.approval_id if trade else None, symbol=r.symbol, direction=r.direction, volume=r.volume,
        entry_price=r.entry_price, close_reason=r.reason, closed_price=r.price if closed else None,
        pnl_gbp=r.pnl_gbp, pnl_percent=pnl_percent, error_message=r.error_message,
        details={"command_id": str(r.command_id), "retcode": r.retcode, "attempts": r.attempts})
    return (derived(record, cause=event, rule="reconciliation/close-recorded"),)


# ------------------------------------------------------------------------------ position reports

def on_positions(state: ReconciliationState, event: Envelope[PositionReport], config: GuardConfig
                 ) -> Decision[ReconciliationState]:
    at = event.occurred_at
    if state.indeterminate_since is not None and at <= state.indeterminate_since:
        return Decision(state)  # older than the outage: says nothing about the account now
    report = event.payload
    observed = {p.ticket: p for p in report.positions}
    deals = _closing_deals(report.closed_deals)
    expected = _bind(state.expected, observed, config)
    expected = _note_partial_closes(expected, deals, observed)
    outputs: list[Envelope[Any]] = []
    conditions: list[_Condition] = []
    for approval_id, trade in list(expected.items()):
        if trade.done_at is not None:
            continue
        trade, produced, found = _reconcile_trade(trade, observed, deals, state, event, config)
        expected[approval_id] = trade
        outputs += produced
        conditions += found
    bound = {t.ticket for t in expected.values() if t.ticket is not None and t.done_at is None}
    conditions += [_unexpected(p) for p in observed.values()
                   if p.ticket not in bound and p.ticket not in state.guard_closing
                   and (at - p.opened_at).total_seconds() >= config.unexpected_after_seconds]
    divergences, changes = _diff(state.divergences, conditions, event, at, expected=expected, observed=observed)
    held = {t: Held.of(p) for t, p in observed.items()}
    # Keep the same objects where nothing changed: an unchanged state is the same state (no table write,
    # no deep comparison).
    held = _same_or(state.held, held)
    expected = _same_or(state.expected, _prune(expected, at, config))
    divergences = _same_or(state.divergences, divergences)
    guard_closing = state.guard_closing if all(t in observed for t in state.guard_closing) else \
        {t: r for t, r in state.guard_closing.items() if t in observed}
    if expected is state.expected and held is state.held and divergences is state.divergences and \
            guard_closing is state.guard_closing and state.indeterminate_since is None:
        return Decision(state, tuple(changes + outputs))
    new_state = ReconciliationState(expected=expected, held=held, divergences=divergences,
                                    guard_closing=guard_closing, indeterminate_since=None)
    return Decision(new_state, tuple(changes + outputs))


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


def _closing_deals(deals: tuple[ObservedDeal, ...]) -> dict[int, ObservedDeal]:
    """The last closing deal of each position in this report."""
    closing: dict[int, ObservedDeal] = {}
    for deal in sorted(deals, key=lambda d: d.time):
        if deal.entry in _CLOSING_ENTRIES:
            closing[deal.position_id] = deal
    return closing


def _bind(expected: dict[str, ExpectedTrade], observed: dict[int, ObservedPosition], config: GuardConfig
          ) -> dict[str, ExpectedTrade]:
    result = dict(expected)
    taken = {t.ticket for t in expected.values() if t.ticket is not None}
    for approval_id, trade in expected.items():
        if trade.ticket is not None or trade.done_at is not None:
            continue
        ticket = _by_comment(trade, observed, taken) or _by_symbol_and_time(trade, observed, taken, config)
        if ticket is not None:
            taken.add(ticket)
            result[approval_id] = replace(trade, ticket=ticket)
    return result


def _by_comment(trade: ExpectedTrade, observed: dict[int, ObservedPosition], taken: set[int]) -> int | None:
    key = trade.signal_id[:COMMENT_KEY_LENGTH]
    return next((t for t, p in observed.items() if t not in taken and p.comment.strip() == key), None)


def _by_symbol_and_time(trade: ExpectedTrade, observed: dict[int, ObservedPosition], taken: set[int],
                        config: GuardConfig) -> int | None:
    window = config.match_window_seconds
    candidates = [p for t, p in observed.items() if t not in taken and p.symbol == trade.symbol
                  and abs((p.opened_at - trade.approved_at).total_seconds()) <= window]
    if not candidates:
        return None
    best = min(candidates, key=lambda p: (p.direction != trade.direction, abs(p.volume - trade.volume),
                                          abs((p.opened_at - trade.approved_at).total_seconds()), p.ticket))
    return best.ticket


def _note_partial_closes(expected: dict[str, ExpectedTrade], deals: dict[int, ObservedDeal],
                         observed: dict[int, ObservedPosition]) -> dict[str, ExpectedTrade]:
    """A closing deal for a position that is still open is a partial close."""
    for approval_id, trade in expected.items():
        if trade.ticket in deals and trade.ticket in observed and not trade.partially_closed:
            expected[approval_id] = replace(trade, partially_closed=True)
    return expected


def _reconcile_trade(
    trade: ExpectedTrade, observed: dict[int, ObservedPosition], deals: dict[int, ObservedDeal],
    state: ReconciliationState, event: Envelope[PositionReport], config: GuardConfig,
) -> tuple[ExpectedTrade, list[Envelope[Any]], list[_Condition]]:
    at = event.occurred_at
    position = observed.get(trade.ticket) if trade.ticket is not None else None
    if position is not None:
        found = _compare(trade, position, config)
        if found or trade.matched_once:
            return trade, [], found
        matched = _record(PositionMatched, event, f"reconciliation/matched/{trade.approval_id}", trade, position,
                          matched=Matched.MATCHED, status=ReconciliationStatus.MATCHED)
        return replace(trade, matched_once=True), [matched], []
    never_seen = trade.ticket is None or trade.ticket not in state.held and trade.ticket not in deals
    if never_seen:
        if (at - trade.approved_at).total_seconds() > config.fill_window_seconds and not trade.platform_closed_all:
            return trade, [], [_missing(trade, at, "no position matches the approved trade")]
        return trade, [], []
    return _vanished(trade, deals.get(trade.ticket), state, event, config)


def _vanished(trade: ExpectedTrade, deal: ObservedDeal | None, state: ReconciliationState,
              event: Envelope[PositionReport], config: GuardConfig
              ) -> tuple[ExpectedTrade, list[Envelope[Any]], list[_Condition]]:
    """The bound position is no longer on the terminal: expected, ours, or outside the platform."""
    at, ticket = event.occurred_at, trade.ticket
    assert ticket is not None
    done = replace(trade, done_at=at)
    last = state.held.get(ticket)
    if trade.platform_closed_all:
        record = _record(PositionMatched, event, f"reconciliation/platform-close/{trade.approval_id}", trade, None,
                         matched=Matched.MATCHED, status=ReconciliationStatus.MATCHED,
                         close_reason=CloseReason.PLATFORM, **_deal_fields(deal, trade))
        return done, [record], []
    if ticket in state.guard_closing:
        return done, [], []  # the guard's own close, recorded from the executor's result
    if deal is None:
        return trade, [], [_missing(trade, at, f"position {ticket} vanished with no closing deal")]
    close_reason = _CLOSE_REASON_OF_DEAL.get(deal.reason, CloseReason.MANUAL)
    stop = last.sl if last is not None and last.sl is not None else trade.stop_loss
    gap = _gapped(trade.direction, stop, deal, config.symbol(trade.symbol).gap_tolerance_percent)
    reason = DivergenceReason.GAP if gap and deal.reason in (DealReason.SL, DealReason.STOP_OUT) else \
        DivergenceReason.CLOSED_OUTSIDE_PLATFORM
    detail = {"deal_ticket": deal.ticket, "deal_reason": deal.reason.value, "deal_price": deal.price,
              "stop_loss": stop, "gap_tolerance_percent": config.symbol(trade.symbol).gap_tolerance_percent}
    record = _record(DivergenceDetected, event, f"reconciliation/{reason.value}/{trade.approval_id}", trade, None,
                     matched=Matched.DIVERGENCE, status=ReconciliationStatus.DIVERGENCE, divergence_reason=reason,
                     close_reason=close_reason, divergence_since=deal.time, details=detail,
                     error_message=_closed_message(reason, close_reason, deal, stop), **_deal_fields(deal, trade))
    # Kept open (as a terminal record) until the platform acknowledges the close.
    return done, [record], [_Condition(reason, trade.approval_id, ticket, {TERMINAL: deal.time})]


def _gapped(direction: Direction, stop: float | None, deal: ObservedDeal, tolerance_percent: float) -> bool:
    """Closed at a price worse than its stop by more than the tolerance."""
    if stop is None:
        return False
    slack = stop * tolerance_percent / 100
    return deal.price < stop - slack if direction is Direction.BUY else deal.price > stop + slack


def _compare(trade: ExpectedTrade, p: ObservedPosition, config: GuardConfig) -> list[_Condition]:
    rules = config.symbol(trade.symbol)
    found: list[_Condition] = []
    base = {"expected": _expected_detail(trade), "observed": _observed_detail(p)}

    def add(reason: DivergenceReason, message: str, **tolerance: Any) -> None:
        found.append(_Condition(reason, trade.approval_id, p.ticket,
                                {**base, "message": message, "tolerance": tolerance}))

    if p.direction != trade.direction:
        add(DivergenceReason.DIRECTION_MISMATCH, f"expected {trade.direction.value}, found {p.direction.value}")
    want = trade.open_volume
    if abs(p.volume - want) > rules.volume_tolerance_lots + 1e-9:
        reason = DivergenceReason.PARTIAL_CLOSE if p.volume < want and trade.partially_closed else \
            DivergenceReason.VOLUME_MISMATCH
        add(reason, f"expected {want:g} lots, found {p.volume:g}", volume_tolerance_lots=rules.volume_tolerance_lots)
    slip = percent_off(p.price_open, trade.entry_price)
    if slip > rules.slippage_percent:
        add(DivergenceReason.SLIPPAGE, f"opened at {p.price_open:g}, approved at {trade.entry_price:g} "
            f"({slip:.4f}% > {rules.slippage_percent}%)", slippage_percent=rules.slippage_percent)
    drift = _stop_drift(trade, p, rules.sl_tp_drift_percent)
    if drift:
        add(DivergenceReason.SL_TP_DRIFT, "; ".join(drift), sl_tp_drift_percent=rules.sl_tp_drift_percent)
    return found


def _stop_drift(trade: ExpectedTrade, p: ObservedPosition, tolerance_percent: float) -> list[str]:
    drift = []
    for name, want, have in (("SL", trade.stop_loss, p.sl), ("TP", trade.take_profit, p.tp)):
        if want is not None and (have is None or percent_off(have, want) > tolerance_percent):
            drift.append(f"{name} expected {want:g}, found {'none' if have is None else f'{have:g}'}")
    return drift


def _missing(trade: ExpectedTrade, at: datetime, message: str) -> _Condition:
    return _Condition(DivergenceReason.MISSING, trade.approval_id, trade.ticket,
                      {"expected": _expected_detail(trade), "message": message})


def _unexpected(p: ObservedPosition) -> _Condition:
    return _Condition(DivergenceReason.UNEXPECTED, None, p.ticket,
                      {"observed": _observed_detail(p), "message": f"position {p.ticket} matches no approved trade"})


# -------------------------------------------------------------------------- divergence bookkeeping

def _diff(open_: dict[str, OpenDivergence], conditions: list[_Condition], event: Envelope[PositionReport],
          at: datetime, *, expected: dict[str, ExpectedTrade], observed: dict[int, ObservedPosition],
          ) -> tuple[dict[str, OpenDivergence], list[Envelope[Any]]]:
    """Report conditions that appeared and divergences that no longer hold; keep the rest quiet.

    A resolution names what it resolves (signal, symbol, prices) from the trade and the position as
    they are now, so its row is found by signal and by symbol like the detection's.
    """
    user_id = event.payload.user_id
    now_open: dict[str, OpenDivergence] = {}
    outputs: list[Envelope[Any]] = []
    for c in conditions:
        if TERMINAL in c.fields:  # already published by _vanished; stays open until acknowledged
            now_open[c.key] = OpenDivergence(c.reason, c.fields[TERMINAL], c.approval_id, c.ticket)
            continue
        existing = open_.get(c.key)
        if existing is not None:
            now_open[c.key] = existing
            continue
        now_open[c.key] = OpenDivergence(c.reason, at, c.approval_id, c.ticket)
        outputs.append(_condition_record(DivergenceDetected, event, c, user_id, since=at))
    for key, d in open_.items():
        if key in now_open:
            continue
        if d.reason in (DivergenceReason.CLOSED_OUTSIDE_PLATFORM, DivergenceReason.GAP):
            now_open[key] = d  # a close record resolves only when the platform acknowledges it
            continue
        c = _Condition(d.reason, d.approval_id, d.ticket, _context(d, expected, observed))
        outputs.append(_condition_record(DivergenceResolved, event, c, user_id, since=d.since))
    return now_open, outputs


def _context(d: OpenDivergence, expected: dict[str, ExpectedTrade],
             observed: dict[int, ObservedPosition]) -> dict[str, Any]:
    fields: dict[str, Any] = {"message": "no longer diverges"}
    trade = expected.get(d.approval_id) if d.approval_id is not None else None
    position = observed.get(d.ticket) if d.ticket is not None else None
    if trade is not None:
        fields["expected"] = _expected_detail(trade)
    if position is not None:
        fields["observed"] = _observed_detail(position)
    return fields


def _condition_record(kind: type[ReconciliationRecord], event: Envelope[PositionReport], c: _Condition,
                      user_id: str, *, since: datetime) -> Envelope[Any]:
    resolved = kind is DivergenceResolved
    expected, observed = c.fields.get("expected", {}), c.fields.get("observed", {})
    record = kind(
        user_id=user_id, matched=Matched.MATCHED if resolved else Matched.DIVERGENCE,
        status=ReconciliationStatus.MATCHED if resolved else ReconciliationStatus.DIVERGENCE,
        signal_id=expected.get("signal_id"), approval_id=c.approval_id, mt5_position_id=c.ticket,
        symbol=expected.get("symbol") or observed.get("symbol"),
        direction=observed.get("direction") or expected.get("direction"),
        volume=observed.get("volume") or expected.get("volume"),
        entry_price=observed.get("price_open") or expected.get("entry_price"),
        current_price=observed.get("price_current"),
        stop_loss=observed.get("sl") or expected.get("stop_loss"),
        take_profit=observed.get("tp") or expected.get("take_profit"),
        divergence_reason=c.reason, divergence_since=since,
        error_message=None if resolved else c.fields.get("message"),
        details=c.fields | (
            {"age_seconds": (event.occurred_at - since).total_seconds()} if resolved else {}))
    verb = "resolved" if resolved else "detected"
    return derived(record, cause=event, rule=f"reconciliation/{verb}/{c.key}")


def _record(kind: type[ReconciliationRecord], event: Envelope[Any], rule: str, trade: ExpectedTrade,
            position: ObservedPosition | None, **fields: Any) -> Envelope[Any]:
    base: dict[str, Any] = dict(
        user_id=event.account_id, signal_id=trade.signal_id, approval_id=trade.approval_id,
        mt5_position_id=trade.ticket, symbol=trade.symbol, direction=trade.direction, volume=trade.volume,
        entry_price=trade.entry_price, stop_loss=trade.stop_loss, take_profit=trade.take_profit)
    if position is not None:
        base |= dict(direction=position.direction, volume=position.volume, entry_price=position.price_open,
                     current_price=position.price_current, stop_loss=position.sl, take_profit=position.tp,
                     pnl_gbp=position.profit_gbp,
                     pnl_percent=_pnl_percent(position.direction, position.price_open, position.price_current),
                     details={"expected": _expected_detail(trade), "observed": _observed_detail(position)})
    return derived(kind(**(base | fields)), cause=event, rule=rule)


def _deal_fields(deal: ObservedDeal | None, trade: ExpectedTrade) -> dict[str, Any]:
    if deal is None:
        return {}
    return {"closed_price": deal.price, "pnl_gbp": deal.profit_gbp,
            "pnl_percent": _pnl_percent(trade.direction, trade.entry_price, deal.price)}


def _closed_message(reason: DivergenceReason, close_reason: CloseReason, deal: ObservedDeal,
                    stop: float | None) -> str:
    if reason is DivergenceReason.GAP:
        return f"closed by {close_reason.value} at {deal.price:g}, worse than its stop {stop:g}"
    return f"closed outside the platform ({close_reason.value}, deal reason {deal.reason.value}) at {deal.price:g}"


def _pnl_percent(direction: Direction | None, entry: float | None, price: float | None) -> float | None:
    if direction is None or not entry or not price:
        return None
    sign = 1 if direction is Direction.BUY else -1
    return round(sign * (price - entry) / entry * 100, 6)


def _expected_detail(t: ExpectedTrade) -> dict[str, Any]:
    return {"signal_id": t.signal_id, "symbol": t.symbol, "direction": t.direction.value, "volume": t.open_volume,
            "entry_price": t.entry_price, "stop_loss": t.stop_loss, "take_profit": t.take_profit}


def _observed_detail(p: ObservedPosition) -> dict[str, Any]:
    return {"ticket": p.ticket, "symbol": p.symbol, "direction": p.direction.value, "volume": p.volume,
            "price_open": p.price_open, "price_current": p.price_current, "sl": p.sl, "tp": p.tp,
            "comment": p.comment}


def _prune(expected: dict[str, ExpectedTrade], at: datetime, config: GuardConfig) -> dict[str, ExpectedTrade]:
    """Forget finished trades after the retention period, so state stays bounded."""
    horizon = at - timedelta(seconds=config.closed_trade_retention_seconds)
    return {k: t for k, t in expected.items() if t.done_at is None or t.done_at > horizon}
