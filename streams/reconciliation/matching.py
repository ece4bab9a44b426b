"""Binding approved trades to terminal positions, and reading closing deals (pure functions)."""

from __future__ import annotations

from infra.settings import GuardSettings
from schemas.common import DealEntry
from schemas.reports import ObservedDeal, ObservedPosition
from streams.decisions import replace
from streams.reconciliation.state import ExpectedTrade

COMMENT_KEY_LENGTH = 29


_CLOSING_ENTRIES = frozenset({DealEntry.OUT, DealEntry.OUT_BY, DealEntry.INOUT})


def closing_deals(deals: tuple[ObservedDeal, ...]) -> dict[int, ObservedDeal]:
    """The last closing deal of each position in this report."""
    closing: dict[int, ObservedDeal] = {}
    for deal in sorted(deals, key=lambda d: d.time):
        if deal.entry in _CLOSING_ENTRIES:
            closing[deal.position_id] = deal
    return closing


def bind(expected: dict[str, ExpectedTrade], observed: dict[int, ObservedPosition], config: GuardSettings
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
                        config: GuardSettings) -> int | None:
    window = config.match_window_seconds
    candidates = [p for t, p in observed.items() if t not in taken and p.symbol == trade.symbol
                  and abs((p.opened_at - trade.approved_at).total_seconds()) <= window]
    if not candidates:
        return None
    best = min(candidates, key=lambda p: (p.direction != trade.direction, abs(p.volume - trade.volume),
                                          abs((p.opened_at - trade.approved_at).total_seconds()), p.ticket))
    return best.ticket


def note_partial_closes(expected: dict[str, ExpectedTrade], deals: dict[int, ObservedDeal],
                         observed: dict[int, ObservedPosition]) -> dict[str, ExpectedTrade]:
    """A closing deal for a position that is still open is a partial close."""
    for approval_id, trade in expected.items():
        if trade.ticket in deals and trade.ticket in observed and not trade.partially_closed:
            expected[approval_id] = replace(trade, partially_closed=True)
    return expected

