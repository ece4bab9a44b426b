"""Conditions that hold at a position report: a trade compared with its position, a vanished
position explained by its deal, and the bookkeeping that reports each divergence once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from infra.settings import GuardSettings
from schemas import Envelope
from schemas.common import CloseReason, DealReason, Direction
from schemas.decisions import (
    DivergenceDetected,
    DivergenceReason,
    DivergenceResolved,
    Matched,
    PositionMatched,
    ReconciliationStatus,
)
from schemas.reports import ObservedDeal, ObservedPosition, PositionReport
from streams.decisions import percent_off, replace
from streams.reconciliation.records import (
    closed_message,
    condition_record,
    deal_fields,
    expected_detail,
    observed_detail,
    trade_record,
)
from streams.reconciliation.state import Condition, ExpectedTrade, OpenDivergence, ReconciliationState

TERMINAL = "__terminal_since__"  # marks a condition already published as a close record


CLOSE_REASON_OF_DEAL = {DealReason.SL: CloseReason.SL, DealReason.TP: CloseReason.TP,
                         DealReason.STOP_OUT: CloseReason.STOP_OUT}


def reconcile_trade(
    trade: ExpectedTrade, observed: dict[int, ObservedPosition], deals: dict[int, ObservedDeal],
    state: ReconciliationState, event: Envelope[PositionReport], config: GuardSettings,
) -> tuple[ExpectedTrade, list[Envelope[Any]], list[Condition]]:
    at = event.occurred_at
    position = observed.get(trade.ticket) if trade.ticket is not None else None
    if position is not None and trade.platform_closed_all:
        return trade, [], _close_pending(trade, position, at, config)
    if position is not None:
        found = compare(trade, position, config, at)
        if found or trade.matched_once:
            return trade, [], found
        matched = trade_record(PositionMatched, event, f"reconciliation/matched/{trade.approval_id}", trade, position,
                          matched=Matched.MATCHED, status=ReconciliationStatus.MATCHED)
        return replace(trade, matched_once=True), [matched], []
    never_seen = trade.ticket is None or trade.ticket not in state.held and trade.ticket not in deals
    if never_seen:
        if (at - trade.approved_at).total_seconds() > config.fill_window_seconds and not trade.platform_closed_all:
            return trade, [], [missing(trade, at, "no position matches the approved trade")]
        return trade, [], []
    return _vanished(trade, deals.get(trade.ticket), state, event, config)


def _vanished(trade: ExpectedTrade, deal: ObservedDeal | None, state: ReconciliationState,
              event: Envelope[PositionReport], config: GuardSettings
              ) -> tuple[ExpectedTrade, list[Envelope[Any]], list[Condition]]:
    """The bound position is no longer on the terminal: expected, ours, or outside the platform."""
    at, ticket = event.occurred_at, trade.ticket
    assert ticket is not None
    done = replace(trade, done_at=at)
    last = state.held.get(ticket)
    if trade.platform_closed_all:
        record = trade_record(PositionMatched, event, f"reconciliation/platform-close/{trade.approval_id}", trade, None,
                         matched=Matched.MATCHED, status=ReconciliationStatus.MATCHED,
                         close_reason=CloseReason.PLATFORM, **deal_fields(deal, trade))
        return done, [record], []
    if ticket in state.guard_closing and (deal is None or deal.reason not in CLOSE_REASON_OF_DEAL):
        return done, [], []  # the guard's own close, recorded from the executor's result (a stop never is)
    if deal is None:
        return trade, [], [missing(trade, at, f"position {ticket} vanished with no closing deal")]
    close_reason = CLOSE_REASON_OF_DEAL.get(deal.reason, CloseReason.MANUAL)
    stop = last.sl if last is not None and last.sl is not None else trade.stop_loss
    gap = _gapped(trade.direction, stop, deal, config.symbol(trade.symbol).gap_tolerance_percent)
    reason = DivergenceReason.GAP if gap and deal.reason in (DealReason.SL, DealReason.STOP_OUT) else \
        DivergenceReason.CLOSED_OUTSIDE_PLATFORM
    detail = {"deal_ticket": deal.ticket, "deal_reason": deal.reason.value, "deal_price": deal.price,
              "stop_loss": stop, "gap_tolerance_percent": config.symbol(trade.symbol).gap_tolerance_percent}
    record = trade_record(DivergenceDetected, event, f"reconciliation/{reason.value}/{trade.approval_id}", trade, None,
                     matched=Matched.DIVERGENCE, status=ReconciliationStatus.DIVERGENCE, divergence_reason=reason,
                     close_reason=close_reason, divergence_since=deal.time, details=detail,
                     error_message=closed_message(reason, close_reason, deal, stop), **deal_fields(deal, trade))
    # Kept open (as a terminal record) until the platform acknowledges the close.
    return done, [record], [Condition(reason, trade.approval_id, ticket, {TERMINAL: deal.time})]


def _close_pending(trade: ExpectedTrade, p: ObservedPosition, at: datetime, config: GuardSettings
                   ) -> list[Condition]:
    """The platform said it closed the trade and the position is still there: late, then not executed."""
    assert trade.platform_closed_at is not None
    waited = (at - trade.platform_closed_at).total_seconds()
    if waited <= config.platform_close_timeout_seconds:
        return []
    message = (f"the platform closed this trade {waited:.0f} s ago; position {p.ticket} is still open "
               f"({p.volume:g} lots)")
    return [Condition(DivergenceReason.CLOSE_NOT_EXECUTED, trade.approval_id, p.ticket,
                      {"expected": expected_detail(trade), "observed": observed_detail(p), "message": message,
                       "platform_closed_at": trade.platform_closed_at.isoformat(),
                       "tolerance": {"platform_close_timeout_seconds": config.platform_close_timeout_seconds}})]


def _gapped(direction: Direction, stop: float | None, deal: ObservedDeal, tolerance_percent: float) -> bool:
    """Closed at a price worse than its stop by more than the tolerance."""
    if stop is None:
        return False
    slack = stop * tolerance_percent / 100
    return deal.price < stop - slack if direction is Direction.BUY else deal.price > stop + slack


def compare(trade: ExpectedTrade, p: ObservedPosition, config: GuardSettings, at: datetime) -> list[Condition]:
    rules = config.symbol(trade.symbol)
    found: list[Condition] = []
    base: dict[str, Any] = {}  # what was expected and observed: built on the first condition (most polls have none)

    def add(reason: DivergenceReason, message: str, **tolerance: Any) -> None:
        if not base:
            base.update(expected=expected_detail(trade), observed=observed_detail(p))
        found.append(Condition(reason, trade.approval_id, p.ticket,
                                {**base, "message": message, "tolerance": tolerance}))

    if p.direction != trade.direction:
        add(DivergenceReason.DIRECTION_MISMATCH, f"expected {trade.direction.value}, found {p.direction.value}")
    want = trade.open_volume
    unclosed = None if trade.platform_closed_at is None else \
        _partial_close_pending(trade, p, rules.volume_tolerance_lots)
    if unclosed is not None:
        assert trade.platform_closed_at is not None
        if (at - trade.platform_closed_at).total_seconds() > config.platform_close_timeout_seconds:
            add(DivergenceReason.CLOSE_NOT_EXECUTED, f"the platform closed {unclosed:g} lots; position {p.ticket} "
                f"still holds {p.volume:g} (expected {want:g})",
                platform_close_timeout_seconds=config.platform_close_timeout_seconds)
    elif abs(p.volume - want) > rules.volume_tolerance_lots + 1e-9:
        reason = DivergenceReason.PARTIAL_CLOSE if p.volume < want and trade.partially_closed else \
            DivergenceReason.VOLUME_MISMATCH
        add(reason, f"expected {want:g} lots, found {p.volume:g}", volume_tolerance_lots=rules.volume_tolerance_lots)
    slip = percent_off(p.price_open, trade.entry_price)
    if slip > rules.slippage_percent:
        add(DivergenceReason.SLIPPAGE, f"opened at {p.price_open:g}, approved at {trade.entry_price:g} "
            f"({slip:.4f}% > {rules.slippage_percent}%)", slippage_percent=rules.slippage_percent)
    if trade.stop_loss is not None or trade.take_profit is not None:  # most trades ask for neither
        drift = _stop_drift(trade, p, rules.sl_tp_drift_percent)
        if drift:
            add(DivergenceReason.SL_TP_DRIFT, "; ".join(drift), sl_tp_drift_percent=rules.sl_tp_drift_percent)
    return found


def _partial_close_pending(trade: ExpectedTrade, p: ObservedPosition, tolerance: float) -> float | None:
    """The lots of the platform's partial close the position has not shed yet (None: it has, or none was made)."""
    if trade.platform_closed_at is None or p.volume <= trade.open_volume + tolerance + 1e-9:
        return None
    before = trade.held_at_platform_close
    if before is not None and p.volume < before - tolerance - 1e-9:
        return None  # it shrank since the close: what is left over is a volume mismatch, not a missing close
    return trade.platform_closed_volume


def _stop_drift(trade: ExpectedTrade, p: ObservedPosition, tolerance_percent: float) -> list[str]:
    drift = []
    for name, want, have in (("SL", trade.stop_loss, p.sl), ("TP", trade.take_profit, p.tp)):
        if want is not None and (have is None or percent_off(have, want) > tolerance_percent):
            drift.append(f"{name} expected {want:g}, found {'none' if have is None else f'{have:g}'}")
    return drift


def missing(trade: ExpectedTrade, at: datetime, message: str) -> Condition:
    return Condition(DivergenceReason.MISSING, trade.approval_id, trade.ticket,
                      {"expected": expected_detail(trade), "message": message})


def unexpected(p: ObservedPosition) -> Condition:
    return Condition(DivergenceReason.UNEXPECTED, None, p.ticket,
                      {"observed": observed_detail(p), "message": f"position {p.ticket} matches no approved trade"})


def diff_divergences(open_: dict[str, OpenDivergence], conditions: list[Condition], event: Envelope[PositionReport],
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
        outputs.append(condition_record(DivergenceDetected, event, c, user_id, since=at))
    for key, d in open_.items():
        if key in now_open:
            continue
        if d.reason in (DivergenceReason.CLOSED_OUTSIDE_PLATFORM, DivergenceReason.GAP):
            now_open[key] = d  # a close record resolves only when the platform acknowledges it
            continue
        c = Condition(d.reason, d.approval_id, d.ticket, _context(d, expected, observed))
        outputs.append(condition_record(DivergenceResolved, event, c, user_id, since=d.since))
    return now_open, outputs


def _context(d: OpenDivergence, expected: dict[str, ExpectedTrade],
             observed: dict[int, ObservedPosition]) -> dict[str, Any]:
    fields: dict[str, Any] = {"message": "no longer diverges"}
    trade = expected.get(d.approval_id) if d.approval_id is not None else None
    position = observed.get(d.ticket) if d.ticket is not None else None
    if trade is not None:
        fields["expected"] = expected_detail(trade)
    if position is not None:
        fields["observed"] = observed_detail(position)
    return fields

