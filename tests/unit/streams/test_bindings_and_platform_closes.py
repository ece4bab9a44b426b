"""Reconciliation: binding by evidence (and revising guesses), and platform closes the terminal never did."""

from __future__ import annotations

from typing import Any

import pytest

from infra.settings import GuardSettings
from schemas import Envelope
from schemas.common import Direction
from schemas.decisions import BindingEvidence, BindingRevised
from streams.reconciliation.state import ReconciliationState
from tests.unit.streams.builders import approved, platform_closed, position, positions
from tests.unit.streams.test_reconciliation_rules import CONFIG, run
MAGIC = CONFIG.platform_magic
SELL = Direction.SELL


def reasons(outputs: list[Envelope[Any]], event_type: str) -> list[tuple[str, int | None]]:
    return [(o.payload.divergence_reason.value, o.payload.mt5_position_id) for o in outputs
            if o.event_type == event_type]


def binding(state: ReconciliationState, approval_id: str) -> tuple[int | None, BindingEvidence | None]:
    trade = state.expected[approval_id]
    return trade.ticket, trade.evidence


@pytest.mark.parametrize("description, approval, observed, evidence", [
    ("the platform's ticket", approved(ticket=1001), position(ticket=1001, comment="x"), BindingEvidence.TICKET),
    ("comment and the platform's magic", approved(), position(ticket=1001, comment="sig-apr-1").model_copy(
        update={"magic": MAGIC}), BindingEvidence.PLATFORM),
    ("comment, another magic", approved(), position(ticket=1001, comment="sig-apr-1"), BindingEvidence.COMMENT),
    ("same symbol, near in time", approved(), position(ticket=1001, opened=5), BindingEvidence.NEARBY),
])
def test_each_binding_records_its_evidence(description, approval, observed, evidence):
    state, _ = run(approval, positions(observed, t=6))
    assert binding(state, "apr-1") == (1001, evidence), description


def test_platform_identity_beats_a_bare_comment():
    bare = position(ticket=1001, comment="sig-apr-1")
    marked = position(ticket=1002, comment="sig-apr-1").model_copy(update={"magic": MAGIC})
    state, _ = run(approved(), positions(bare, marked, t=3))
    assert binding(state, "apr-1") == (1002, BindingEvidence.PLATFORM)


def test_a_guess_never_takes_a_position_that_names_another_known_signal():
    other = position(ticket=1001, comment="sig-apr-2", opened=2)
    state, _ = run(approved("apr-1", t=0), approved("apr-2", t=100, symbol="GBPUSD"), positions(other, t=3))
    assert binding(state, "apr-1") == (None, None)


def test_a_guess_never_takes_a_position_the_platform_marked_for_an_unknown_signal():
    marked = position(ticket=1001, comment="sig-not-yet-known", opened=2).model_copy(update={"magic": MAGIC})
    state, _ = run(approved(), positions(marked, t=3))
    assert binding(state, "apr-1") == (None, None)


def test_two_trades_a_second_apart_are_not_bound_crosswise():
    """The sell fills first and is the only candidate of the buy; once the buy fills, both are revised."""
    buy = approved("apr-buy", t=0, volume=0.1, sl=None, tp=None)
    sell_fill = position(ticket=2002, direction=SELL, volume=0.2, sl=None, tp=None, opened=1.5)
    state, first = run(buy, positions(sell_fill, t=2))
    assert binding(state, "apr-buy") == (2002, BindingEvidence.NEARBY)
    assert ("direction_mismatch", 2002) in reasons(first, "DivergenceDetected")

    sell = approved("apr-sell", t=1, direction=SELL, volume=0.2, entry=1.1, sl=None, tp=None)
    buy_fill = position(ticket=2001, volume=0.1, sl=None, tp=None, opened=2.5)
    state, later = run(sell, positions(sell_fill, buy_fill, t=3), state=state)

    assert binding(state, "apr-buy") == (2001, BindingEvidence.NEARBY)
    assert binding(state, "apr-sell") == (2002, BindingEvidence.NEARBY)
    revised = [o.payload for o in later if isinstance(o.payload, BindingRevised)]
    assert [(r.approval_id, r.previous_ticket, r.mt5_position_id) for r in revised] == [("apr-buy", 2002, 2001)]
    assert "2002 (nearby) -> position 2001 (nearby)" in (revised[0].error_message or "")
    assert ("direction_mismatch", 2002) in reasons(later, "DivergenceResolved")
    assert reasons(later, "DivergenceDetected") == []
    assert sorted(o.payload.approval_id for o in later if o.event_type == "PositionMatched") == ["apr-buy", "apr-sell"]


def test_a_guess_gives_way_to_the_position_that_names_the_signal():
    by_hand = position(ticket=3001, comment="by hand", opened=1)
    state, _ = run(approved(), positions(by_hand, t=2))
    assert binding(state, "apr-1") == (3001, BindingEvidence.NEARBY)

    ours = position(ticket=3002, comment="sig-apr-1", opened=3).model_copy(update={"magic": MAGIC})
    state, outputs = run(positions(by_hand, ours, t=4), state=state)
    assert binding(state, "apr-1") == (3002, BindingEvidence.PLATFORM)
    revised = [o.payload for o in outputs if isinstance(o.payload, BindingRevised)]
    assert [(r.previous_ticket, r.previous_evidence, r.evidence) for r in revised] == [
        (3001, BindingEvidence.NEARBY, BindingEvidence.PLATFORM)]


def test_firm_bindings_never_change_and_guesses_stay_put_when_nothing_new_appears():
    state, _ = run(approved("apr-1", ticket=1001), approved("apr-2", t=1),
                   positions(position(ticket=1001), position(ticket=1002, opened=2), t=3))
    again, outputs = run(positions(position(ticket=1001), position(ticket=1002, opened=2), t=4), state=state)
    assert again is state and outputs == []


def test_a_platform_close_the_terminal_never_does_is_close_not_executed_then_resolved_when_it_closes():
    config = GuardSettings(platform_close_timeout_seconds=30)
    held = position(ticket=1001)
    state, _ = run(approved(ticket=1001), positions(held, t=2), platform_closed(t=10), config=config)

    state, waiting = run(positions(held, t=39), state=state, config=config)
    assert waiting == [], "within the timeout the close may still be on its way"

    state, late = run(positions(held, t=41), positions(held, t=42), state=state, config=config)
    assert reasons(late, "DivergenceDetected") == [("close_not_executed", 1001)]
    assert "still open" in (late[0].payload.error_message or "")

    _, closed = run(positions(t=50), state=state, config=config)
    assert reasons(closed, "DivergenceResolved") == [("close_not_executed", 1001)]
    assert [(o.event_type, o.payload.close_reason and o.payload.close_reason.value) for o in closed
            if o.event_type == "PositionMatched"] == [("PositionMatched", "platform")]


def test_a_platform_close_done_in_time_is_no_divergence():
    state, _ = run(approved(ticket=1001), positions(position(ticket=1001), t=2), platform_closed(t=10))
    _, outputs = run(positions(position(ticket=1001), t=12), positions(t=14), state=state)
    assert [o.event_type for o in outputs] == ["PositionMatched"]


def test_a_partial_platform_close_left_undone_is_close_not_executed_and_done_late_resolves():
    config = GuardSettings(platform_close_timeout_seconds=30)
    state, _ = run(approved(ticket=1001, volume=0.3), positions(position(ticket=1001, volume=0.3), t=2),
                   platform_closed(t=10, volume=0.1), config=config)
    state, waiting = run(positions(position(ticket=1001, volume=0.3), t=35), state=state, config=config)
    assert waiting == [], "within the timeout, the larger volume is a close on its way, not a mismatch"
    state, late = run(positions(position(ticket=1001, volume=0.3), t=41), state=state, config=config)
    assert reasons(late, "DivergenceDetected") == [("close_not_executed", 1001)]
    _, done = run(positions(position(ticket=1001, volume=0.2), t=45), state=state, config=config)
    assert reasons(done, "DivergenceResolved") == [("close_not_executed", 1001)]
    assert reasons(done, "DivergenceDetected") == []


def test_a_position_that_shrank_by_less_than_the_platform_closed_is_a_volume_mismatch():
    state, _ = run(approved(ticket=1001, volume=0.3), positions(position(ticket=1001, volume=0.3), t=2),
                   platform_closed(t=10, volume=0.2))
    _, outputs = run(positions(position(ticket=1001, volume=0.2), t=12), state=state)
    assert reasons(outputs, "DivergenceDetected") == [("volume_mismatch", 1001)]
