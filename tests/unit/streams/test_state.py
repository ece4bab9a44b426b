"""Rule states survive a trip through JSON (the Faust changelog) unchanged, volatile parts included."""

from __future__ import annotations

import json

from infra.settings import AccountLevels, GuardSettings
from streams.drawdown.rules import handle as drawdown
from streams.drawdown.state import DrawdownState
from streams.market.rules import MarketState
from streams.market.rules import handle as market
from streams.reconciliation.rules import handle as reconcile
from streams.reconciliation.state import ReconciliationState
from streams.state import dump_state, load_state
from tests.unit.streams.builders import account, approved, position, positions, sync_failed, tick

CONFIG = GuardSettings(max_reading_age_seconds=None)


def round_trip(state):
    data = json.loads(json.dumps(dump_state(state)))
    loaded = load_state(type(state), data)
    assert loaded == state and dump_state(loaded) == dump_state(state)
    return loaded


def test_reconciliation_state_round_trips():
    state = ReconciliationState()
    for event in (approved(ticket=1001), positions(position(sl=1.085), t=2), sync_failed(t=3)):
        state = reconcile(state, event, CONFIG).state
    assert round_trip(state).divergences


def test_drawdown_state_with_a_pending_close_round_trips():
    state = DrawdownState()
    for event in (positions(position(), t=0), account(10_000, t=0.5), account(10_000, t=1), account(8_000, t=2),
                  account(8_000, t=3)):
        state = drawdown(state, event, AccountLevels(), CONFIG, event.occurred_at).state
    assert state.pending is not None
    loaded = round_trip(state)
    assert loaded.pending.cause == state.pending.cause and loaded.last == state.last


def test_market_state_round_trips():
    state = MarketState()
    for event in (positions(position(), t=0), tick(t=1), tick(spread_points=300, t=2)):
        state = market(state, event, CONFIG).state
    assert round_trip(state).closed_at


def test_an_unknown_account_starts_empty():
    assert load_state(DrawdownState, None) == DrawdownState()


def test_drawdown_state_with_applied_flows_round_trips():
    from schemas.reports import MoneyFlow, MoneyFlowKind
    from tests.unit.streams.builders import at

    flow = MoneyFlow(ticket=5, kind=MoneyFlowKind.BALANCE, amount=-500.0, amount_gbp=-500.0, time=at(2.5),
                     server_time=at(2.5))
    state = DrawdownState()
    for event in (account(10_000, t=1), account(10_000, t=2)):
        state = drawdown(state, event, AccountLevels(), CONFIG, event.occurred_at).state
    withdrawal = account(9_500, t=3, balance=9_500)
    withdrawal = withdrawal.model_copy(update={"payload": withdrawal.payload.model_copy(
        update={"money_flows": (flow,)})})
    state = drawdown(state, withdrawal, AccountLevels(), CONFIG, withdrawal.occurred_at).state
    loaded = round_trip(state)
    assert loaded.flows == state.flows and loaded.flows[0].ticket == 5 and loaded.peak_equity_gbp == 9_500
