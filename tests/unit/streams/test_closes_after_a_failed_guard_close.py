"""A position the guard ordered closed is never left "being closed": a stop, a take-profit or a hand
that closes it after a failed guard close is recorded with its reason (and the gap, through the stop)."""

from __future__ import annotations

from typing import Any

import pytest

from infra.settings import GuardSettings
from schemas import Envelope, observed
from schemas.commands import ClosePosition
from schemas.common import CloseReason, DealReason
from streams.reconciliation.rules import handle
from streams.reconciliation.state import ReconciliationState
from tests.unit.streams.builders import USER, approved, at, close_result, deal, position, positions

CONFIG = GuardSettings()


def run(*events: Envelope[Any]) -> list[Envelope[Any]]:
    state, outputs = ReconciliationState(), []
    for event in events:
        decision = handle(state, event, CONFIG)
        state, outputs = decision.state, outputs + list(decision.outputs)
    return outputs


def ordered(t: float = 5) -> Envelope[ClosePosition]:
    return observed(ClosePosition(user_id=USER, symbol="EURUSD", tickets=(1001,), reason=CloseReason.DRAWDOWN_GUARD,
                                  rule="drawdown_guard/close"), account_id=USER, occurred_at=at(t))


def rows(outputs: list[Envelope[Any]]) -> list[tuple[str, str | None, str | None, str | None]]:
    return [(o.event_type, o.payload.status.value, o.payload.divergence_reason and o.payload.divergence_reason.value,
             o.payload.close_reason and o.payload.close_reason.value) for o in outputs]


@pytest.mark.parametrize("description, closing, expected", [
    ("its stop, at the stop", deal(reason=DealReason.SL, price=1.09), ("closed_outside_platform", "sl")),
    ("its stop, through the stop: a gap", deal(reason=DealReason.SL, price=1.085), ("gap", "sl")),
    ("a hand", deal(reason=DealReason.CLIENT, price=1.095), ("closed_outside_platform", "manual")),
])
def test_a_close_after_a_failed_guard_close_is_recorded_with_its_reason(description, closing, expected):
    outputs = run(approved(ticket=1001), positions(position(), t=2), ordered(), close_result(ok=False, t=6),
                  positions(t=8, deals=(closing,)))
    assert rows(outputs)[-1] == ("DivergenceDetected", "divergence", *expected), description
    assert rows(outputs)[1] == ("PositionCloseRecorded", "failed", None, "drawdown_guard"), "the refusal is on record"


def test_a_stop_that_beats_the_guard_close_is_recorded_even_while_the_close_is_in_flight():
    outputs = run(approved(ticket=1001), positions(position(), t=2), ordered(),
                  positions(t=8, deals=(deal(reason=DealReason.SL, price=1.085),)))
    assert rows(outputs)[-1] == ("DivergenceDetected", "divergence", "gap", "sl")


def test_the_guards_own_close_is_still_recorded_once_from_the_executors_result():
    outputs = run(approved(ticket=1001), positions(position(), t=2), ordered(), close_result(ok=True, t=6),
                  positions(t=8, deals=(deal(reason=DealReason.EXPERT, price=1.095),)))
    assert [r[0] for r in rows(outputs)] == ["PositionMatched", "PositionCloseRecorded"]


def test_the_guards_close_confirmed_before_its_command_is_read_is_not_a_close_outside_the_platform():
    """Commands and results are two topics read in no set order, and a restart re-reads either: the
    executor's confirmation alone says the guard closed the position."""
    outputs = run(approved(ticket=1001), positions(position(), t=2), close_result(ok=True, t=6),
                  positions(t=8, deals=(deal(reason=DealReason.EXPERT, price=1.095),)))
    assert [r[0] for r in rows(outputs)] == ["PositionMatched", "PositionCloseRecorded"]
    refused = run(approved(ticket=1001), positions(position(), t=2), close_result(ok=False, t=6),
                  positions(t=8, deals=(deal(reason=DealReason.CLIENT, price=1.095),)))
    assert rows(refused)[-1] == ("DivergenceDetected", "divergence", "closed_outside_platform", "manual"), \
        "a refusal is no such evidence: what closed it later is recorded"
