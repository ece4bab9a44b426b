"""Binding approved trades to terminal positions, and reading closing deals (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass

from infra.settings import GuardSettings
from schemas.common import DealEntry
from schemas.decisions import BindingEvidence
from schemas.reports import ObservedDeal, ObservedPosition
from streams.decisions import replace
from streams.reconciliation.state import ExpectedTrade

COMMENT_KEY_LENGTH = 29


_CLOSING_ENTRIES = frozenset({DealEntry.OUT, DealEntry.OUT_BY, DealEntry.INOUT})


def closing_deals(deals: tuple[ObservedDeal, ...]) -> dict[int, ObservedDeal]:
    """The last closing deal of each position in this report."""
    closing: dict[int, ObservedDeal] = {}
    if not deals:  # most reports
        return closing
    for deal in sorted(deals, key=lambda d: d.time):
        if deal.entry in _CLOSING_ENTRIES:
            closing[deal.position_id] = deal
    return closing


@dataclass(frozen=True)
class Revision:
    """A trade's binding changed from one position (or none) to another (or none)."""

    approval_id: str
    previous_ticket: int | None
    previous_evidence: BindingEvidence | None


def bind(expected: dict[str, ExpectedTrade], observed: dict[int, ObservedPosition], config: GuardSettings
         ) -> tuple[dict[str, ExpectedTrade], list[Revision]]:
    """Bind each open trade to a position by the strongest evidence; revise guesses (``nearby``).

    Bindings by ticket, platform identity or comment never change. A position taken by such
    evidence is taken from any trade that had only guessed it; the guesses are then made again,
    all together, over the positions left, so two trades close in time do not end up crosswise."""
    result = dict(expected)
    guessing = [t for t in expected.values() if t.done_at is None and not firm(t)
                and (t.ticket is None or t.ticket in observed)]
    if not guessing:  # every open trade is bound for good (most reports): nothing is revised
        return result, []
    guessing.sort(key=lambda t: (t.approved_at, t.approval_id))
    taken = {t.ticket for t in expected.values() if t.ticket is not None and
             (t.done_at is not None or firm(t) or t.ticket not in observed)}
    for trade in list(guessing):
        found = _by_identity(trade, observed, taken, config)
        if found is not None:
            taken.add(found[0])
            result[trade.approval_id] = _rebound(trade, *found)
            guessing.remove(trade)
    keys = {_key(t.signal_id) for t in expected.values()} if guessing else set()
    for approval_id, ticket in _nearby(guessing, observed, taken, keys, config).items():
        evidence = BindingEvidence.NEARBY if ticket is not None else None
        result[approval_id] = _rebound(expected[approval_id], ticket, evidence)
    revisions = [Revision(a, t.ticket, t.evidence) for a, t in expected.items()
                 if t.ticket is not None and result[a].ticket != t.ticket]
    return result, revisions


_FIRM = frozenset({BindingEvidence.TICKET, BindingEvidence.PLATFORM, BindingEvidence.COMMENT})


def firm(trade: ExpectedTrade) -> bool:
    """Bound by evidence that never changes (a binding from before evidence was kept counts as firm)."""
    return trade.evidence in _FIRM or trade.ticket is not None and trade.evidence is None


def _key(signal_id: str) -> str:
    return signal_id[:COMMENT_KEY_LENGTH]


def _rebound(trade: ExpectedTrade, ticket: int | None, evidence: BindingEvidence | None) -> ExpectedTrade:
    if ticket == trade.ticket:
        return trade if evidence == trade.evidence else replace(trade, evidence=evidence)
    # Another position: what was concluded about the old one (matched, partly closed) does not carry over.
    return replace(trade, ticket=ticket, evidence=evidence, matched_once=False, partially_closed=False)


def _by_identity(trade: ExpectedTrade, observed: dict[int, ObservedPosition], taken: set[int],
                 config: GuardSettings) -> tuple[int, BindingEvidence] | None:
    """A position whose comment names the trade's signal; one with the platform's magic first."""
    key = _key(trade.signal_id)
    named = sorted(t for t, p in observed.items() if t not in taken and p.comment.strip() == key)
    if not named:
        return None
    ours = [t for t in named if config.platform_magic and observed[t].magic == config.platform_magic]
    return (ours[0], BindingEvidence.PLATFORM) if ours else (named[0], BindingEvidence.COMMENT)


def _names_another_signal(trade: ExpectedTrade, p: ObservedPosition, keys: set[str], config: GuardSettings) -> bool:
    """The position says whose it is, and it is not this trade's (a known signal, or the platform's mark)."""
    comment = p.comment.strip()
    if not comment or comment == _key(trade.signal_id):
        return False
    return comment in keys or bool(config.platform_magic and p.magic == config.platform_magic)


def _nearby(trades: list[ExpectedTrade], observed: dict[int, ObservedPosition], taken: set[int], keys: set[str],
            config: GuardSettings) -> dict[str, int | None]:
    """Guesses for every trade at once: the best-fitting (trade, position) pairs first."""
    window = config.match_window_seconds
    pairs = []
    for trade in trades:
        for ticket, p in observed.items():
            if ticket in taken or p.symbol != trade.symbol or _names_another_signal(trade, p, keys, config):
                continue
            apart = abs((p.opened_at - trade.approved_at).total_seconds())
            if apart <= window:
                fit = (p.direction != trade.direction, round(abs(p.volume - trade.open_volume), 6),
                       ticket != trade.ticket, apart, ticket)
                pairs.append((fit, trade.approval_id, ticket))
    chosen: dict[str, int | None] = {t.approval_id: None for t in trades}
    used: set[int] = set()
    for _, approval_id, ticket in sorted(pairs):
        if chosen[approval_id] is None and ticket not in used:
            chosen[approval_id] = ticket
            used.add(ticket)
    return chosen


def note_partial_closes(expected: dict[str, ExpectedTrade], deals: dict[int, ObservedDeal],
                         observed: dict[int, ObservedPosition]) -> dict[str, ExpectedTrade]:
    """A closing deal for a position that is still open is a partial close."""
    if not deals:  # most reports
        return expected
    for approval_id, trade in expected.items():
        if trade.ticket in deals and trade.ticket in observed and not trade.partially_closed:
            expected[approval_id] = replace(trade, partially_closed=True)
    return expected

