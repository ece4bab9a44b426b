"""An account's derived figures on the simulated server: the cached snapshot, and the records built from it."""

from __future__ import annotations

import pytest

from producers.mt5 import constants as c
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal
from producers.mt5.simulator.accounts import (
    build_account_info,
    build_position,
    compute_snapshot,
    hedged_margin,
    margin_legs,
    position_price,
    profit_in,
)
from producers.mt5.types import AccountInfo, TradePosition
from tests.unit.producers.conftest import LOGIN, PASSWORD


@pytest.fixture
def hedged(broker: SimulatedBroker) -> SimulatedBroker:
    """The GBP account holding a hedge on EURUSD (two legs), gold and a yen pair, an hour of market later."""
    for symbol, kind, volume in (("EURUSD", c.ORDER_TYPE_BUY, 0.3), ("EURUSD", c.ORDER_TYPE_SELL, 0.1),
                                 ("XAUUSD", c.ORDER_TYPE_SELL, 0.2), ("USDJPY", c.ORDER_TYPE_BUY, 0.05)):
        broker.manual_open(LOGIN, symbol, kind, volume)
    broker.advance(3600)
    return broker


def test_the_snapshot_is_the_per_position_arithmetic_to_the_bit(hedged: SimulatedBroker) -> None:
    """compute_snapshot folds profit and margin into one pass; it must equal profit_in and margin_legs."""
    account, market = hedged.account(LOGIN), hedged.market
    snap = compute_snapshot(account, market, (market.revision, account.revision))
    expected = {p.ticket: profit_in(account.currency, market, market.symbols[p.symbol].spec, p.type, p.volume,
                                    p.price_open, position_price(market, p.symbol, p.type))
                for p in account.positions.values()}
    assert snap.profits == expected
    assert snap.profit == round(float(sum(expected.values())), 2)
    assert snap.margin == hedged_margin(margin_legs(account, market))


def test_records_carry_each_value_under_its_own_field_name(hedged: SimulatedBroker) -> None:
    """Records are built from values in field order: each value must land in the field the package names."""
    account, market = hedged.account(LOGIN), hedged.market
    snap = account.snapshot(market)
    p = next(iter(account.positions.values()))
    assert build_position(p, market, snap.profits[p.ticket]) == TradePosition(
        ticket=p.ticket, time=p.time_msc // 1000, time_msc=p.time_msc, time_update=p.time_update_msc // 1000,
        time_update_msc=p.time_update_msc, type=p.type, magic=p.magic, identifier=p.ticket, reason=p.reason,
        volume=p.volume, price_open=p.price_open, sl=p.sl, tp=p.tp,
        price_current=position_price(market, p.symbol, p.type), swap=0.0, profit=snap.profits[p.ticket],
        symbol=p.symbol, comment=p.comment, external_id="")
    equity = round(account.balance + account.credit + snap.profit, 2)
    assert build_account_info(account, snap) == AccountInfo(
        login=account.login, trade_mode=account.trade_mode, leverage=account.leverage, limit_orders=200,
        margin_so_mode=c.ACCOUNT_STOPOUT_MODE_PERCENT, trade_allowed=True, trade_expert=True,
        margin_mode=c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING, currency_digits=2, fifo_close=False,
        balance=account.balance, credit=account.credit, profit=snap.profit, equity=equity, margin=snap.margin,
        margin_free=round(equity - snap.margin, 2), margin_level=round(equity / snap.margin * 100, 2),
        margin_so_call=account.margin_so_call, margin_so_so=account.margin_so_so, margin_initial=0.0,
        margin_maintenance=0.0, assets=0.0, liabilities=0.0, commission_blocked=0.0,
        name=account.name, server=account.server, currency=account.currency, company=account.company)


@pytest.mark.parametrize(("operation", "balance", "credit"), [
    pytest.param("deposit", 2_500.0, 0.0, id="a deposit moves balance and equity"),
    pytest.param("withdrawal", -1_000.0, 0.0, id="a withdrawal moves them down"),
    pytest.param("credit", 0.0, 700.0, id="a credit moves credit and equity, not balance"),
])
def test_the_figures_read_after_a_balance_operation_include_it(hedged: SimulatedBroker, operation: str,
                                                                balance: float, credit: float) -> None:
    """Figures are cached per (market, account) revision: a read after a deposit at the same market
    revision (no tick in between) must not serve the snapshot taken before it."""
    mt5 = SimulatedTerminal(hedged, login=LOGIN, password=PASSWORD)
    assert mt5.initialize(), mt5.last_error()
    before, positions_before = mt5.account_info(), mt5.positions_get()
    revision = hedged.market.revision
    if operation == "credit":
        hedged.credit(LOGIN, credit)
    else:
        hedged.deposit(LOGIN, balance)
    after = mt5.account_info()
    assert hedged.market.revision == revision  # the same quotes: only the money moved
    assert after.balance == round(before.balance + balance, 2)
    assert after.credit == round(before.credit + credit, 2)
    assert after.equity == round(before.equity + balance + credit, 2)
    assert after.margin_free == round(after.equity - after.margin, 2)
    assert (after.profit, after.margin) == (before.profit, before.margin)
    assert mt5.positions_get() == positions_before
