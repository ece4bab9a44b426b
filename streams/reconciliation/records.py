"""The reconciliation_logs records: built from a trade, a position and a closing deal."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas import Envelope, derived
from schemas.common import CloseReason, Direction
from schemas.decisions import (
    BindingEvidence,
    BindingRevised,
    DivergenceReason,
    DivergenceResolved,
    Matched,
    ReconciliationRecord,
    ReconciliationStatus,
)
from schemas.reports import ObservedDeal, ObservedPosition, PositionReport
from streams.reconciliation.matching import Revision
from streams.reconciliation.state import Condition, ExpectedTrade


def condition_record(kind: type[ReconciliationRecord], event: Envelope[PositionReport], c: Condition,
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


def trade_record(kind: type[ReconciliationRecord], event: Envelope[Any], rule: str, trade: ExpectedTrade,
            position: ObservedPosition | None, **fields: Any) -> Envelope[Any]:
    base: dict[str, Any] = dict(
        user_id=event.account_id, signal_id=trade.signal_id, approval_id=trade.approval_id,
        mt5_position_id=trade.ticket, symbol=trade.symbol, direction=trade.direction, volume=trade.volume,
        entry_price=trade.entry_price, stop_loss=trade.stop_loss, take_profit=trade.take_profit)
    if position is not None:
        base |= dict(direction=position.direction, volume=position.volume, entry_price=position.price_open,
                     current_price=position.price_current, stop_loss=position.sl, take_profit=position.tp,
                     pnl_gbp=position.profit_gbp,
                     pnl_percent=pnl_percent(position.direction, position.price_open, position.price_current),
                     details={"expected": expected_detail(trade), "observed": observed_detail(position)})
    return derived(kind(**(base | fields)), cause=event, rule=rule)


def binding_revised(trade: ExpectedTrade, revision: Revision, event: Envelope[PositionReport],
                    observed: dict[int, ObservedPosition]) -> Envelope[Any]:
    """The audit row of a binding that changed: from which position, on what evidence, to which."""
    was = f"position {revision.previous_ticket} ({_evidence(revision.previous_evidence)})"
    now = f"position {trade.ticket} ({_evidence(trade.evidence)})" if trade.ticket is not None else "no position"
    bound = trade.ticket is not None
    fields: dict[str, Any] = {
        "matched": Matched.MATCHED if bound else Matched.INDETERMINATE,
        "status": ReconciliationStatus.MATCHED if bound else ReconciliationStatus.DIVERGENCE,
        "previous_ticket": revision.previous_ticket, "previous_evidence": revision.previous_evidence,
        "evidence": trade.evidence, "error_message": f"binding revised: {was} -> {now}"}
    position = observed.get(trade.ticket) if trade.ticket is not None else None
    return trade_record(BindingRevised, event, f"reconciliation/binding-revised/{trade.approval_id}", trade,
                        position, **fields)


def _evidence(evidence: BindingEvidence | None) -> str:
    return evidence.value if evidence is not None else "unknown"


def deal_fields(deal: ObservedDeal | None, trade: ExpectedTrade) -> dict[str, Any]:
    if deal is None:
        return {}
    return {"closed_price": deal.price, "pnl_gbp": deal.profit_gbp,
            "pnl_percent": pnl_percent(trade.direction, trade.entry_price, deal.price)}


def closed_message(reason: DivergenceReason, close_reason: CloseReason, deal: ObservedDeal,
                    stop: float | None) -> str:
    if reason is DivergenceReason.GAP:
        return f"closed by {close_reason.value} at {deal.price:g}, worse than its stop {stop:g}"
    return f"closed outside the platform ({close_reason.value}, deal reason {deal.reason.value}) at {deal.price:g}"


def pnl_percent(direction: Direction | None, entry: float | None, price: float | None) -> float | None:
    if direction is None or not entry or not price:
        return None
    sign = 1 if direction is Direction.BUY else -1
    return round(sign * (price - entry) / entry * 100, 6)


def expected_detail(t: ExpectedTrade) -> dict[str, Any]:
    return {"signal_id": t.signal_id, "symbol": t.symbol, "direction": t.direction.value, "volume": t.open_volume,
            "entry_price": t.entry_price, "stop_loss": t.stop_loss, "take_profit": t.take_profit}


def observed_detail(p: ObservedPosition) -> dict[str, Any]:
    return {"ticket": p.ticket, "symbol": p.symbol, "direction": p.direction.value, "volume": p.volume,
            "price_open": p.price_open, "price_current": p.price_current, "sl": p.sl, "tp": p.tp,
            "comment": p.comment}

