"""The simulated broker keeps a UTC+2/UTC+3 server clock and the guard's market calendar, and the
poller turns what its terminal says back into true UTC, with deposits, withdrawals and credit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from infra.brokerclock import BrokerClock, server_clock_at
from producers.mt5 import constants as c
from producers.mt5.gateway import SimulatorGateway
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal
from producers.poller.client import SymbolCache, read_account
from producers.poller.parsing import PollState, conclude_poll, latest_tick_msc

LOGIN = 7001


def broker_at(text: str, **options: object) -> tuple[SimulatedBroker, SimulatedTerminal]:
    start = datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    broker = SimulatedBroker(seed=3, start_time=start, **options)  # type: ignore[arg-type]
    broker.add_account(LOGIN, "pw", currency="USD")
    terminal = SimulatedTerminal(broker, login=LOGIN, password="pw")
    assert terminal.initialize()
    return broker, terminal


@pytest.mark.parametrize("description, start, hours", [
    ("January: UTC+2", "2026-01-12T10:00", 2),
    ("between New York's and Europe's March switches: UTC+3", "2026-03-16T10:00", 3),
    ("July: UTC+3", "2026-07-06T10:00", 3),
    ("between Europe's and New York's autumn switches: UTC+3", "2026-10-27T10:00", 3),
    ("after New York's autumn switch: UTC+2", "2026-11-02T10:00", 2),
])
def test_the_simulated_server_clock_follows_new_york_close(description, start, hours):
    broker, mt5 = broker_at(start)
    broker.advance(5)
    tick = mt5.symbol_info_tick("EURUSD")
    assert tick.time - broker.now() == pytest.approx(hours * 3600, abs=2), description


def test_a_closed_market_has_no_ticks_and_refuses_trades_with_10018():
    broker, mt5 = broker_at("2026-11-06T21:58")  # Friday, two minutes before 17:00 New York
    broker.advance(5 * 60)
    last = mt5.symbol_info_tick("EURUSD")
    broker.advance(3600)
    assert mt5.symbol_info_tick("EURUSD") == last
    tick = mt5.symbol_info_tick("EURUSD")
    result = mt5.order_send({"action": c.TRADE_ACTION_DEAL, "symbol": "EURUSD", "volume": 0.1,
                             "type": c.ORDER_TYPE_BUY, "price": tick.ask, "deviation": 20,
                             "type_filling": c.ORDER_FILLING_FOK})
    assert result.retcode == c.TRADE_RETCODE_MARKET_CLOSED


def test_gold_pauses_in_its_daily_break_and_trades_after_it():
    broker, mt5 = broker_at("2026-12-02T21:59")  # 16:59 New York
    broker.advance(90)
    during = mt5.symbol_info_tick("XAUUSD")
    broker.advance(30 * 60)
    assert mt5.symbol_info_tick("XAUUSD") == during
    broker.advance(31 * 60)
    assert mt5.symbol_info_tick("XAUUSD").time > during.time


def poll(broker: SimulatedBroker, mt5: SimulatedTerminal, clock: BrokerClock, state: PollState,
         cache: SymbolCache) -> tuple[object, PollState]:
    now = datetime.fromtimestamp(broker.now(), UTC)
    offset = clock.offset_minutes(now)
    read = read_account(SimulatorGateway(mt5), login=LOGIN, cache=cache, previous=state.volumes, pending=state.waiting,
                        flows_since=state.flows_since, server_now=int(server_clock_at(now, offset).timestamp()))
    clock.observe(latest_tick_msc(read.ticks.values()), now)
    offset = clock.offset_minutes(now)
    outcome = conclude_poll(read, state, user_id="u1", poll_seq=0, offset=offset,
                            server_now=server_clock_at(now, offset))
    return outcome, outcome.state


def test_the_poller_reports_true_utc_and_each_money_flow_as_new_once():
    broker, mt5 = broker_at("2026-07-06T10:00")
    ticket = broker.manual_open(LOGIN, "EURUSD", c.ORDER_TYPE_BUY, 0.1)
    opened_true = broker.now()
    clock, state, cache = BrokerClock(assumed="UTC+00:00"), PollState(), SymbolCache()
    outcomes = []
    for second in range(6):
        broker.advance(1)
        if second == 3:
            broker.deposit(LOGIN, 500.0)
            broker.deposit(LOGIN, -200.0, "Withdrawal")
            broker.credit(LOGIN, 300.0)
        outcome, state = poll(broker, mt5, clock, state, cache)
        outcomes.append(outcome)
    assert clock.learned == 180
    last = outcomes[-1]
    position = next(p for p in last.positions.positions if p.ticket == ticket)
    assert abs(position.opened_at.timestamp() - opened_true) < 0.01
    assert position.opened_server_at - position.opened_at == timedelta(hours=3)
    assert abs((last.ticks[0].quoted_at - datetime.fromtimestamp(broker.now(), UTC)).total_seconds()) < 2
    assert last.account.server_offset_minutes == 180 and last.account.credit == 300.0
    new = [f for o in outcomes for f in o.account.money_flows if f.after_previous_poll]
    assert [(f.kind.value, f.amount) for f in new] == [("balance", 500.0), ("balance", -200.0), ("credit", 300.0)]
    # found by a later poll, so not in an earlier report's balance; then repeated, as already reported
    repeated = [f for f in last.account.money_flows if f.comment != "Initial deposit"]
    assert [(f.ticket, f.after_previous_poll) for f in repeated] == [(f.ticket, False) for f in new]
    assert last.account.positions_profit == pytest.approx(last.account.equity - last.account.balance - 300.0)


def test_a_first_poll_marks_the_flows_it_finds_as_a_look_back():
    """A poller's first read cannot know whether an earlier report already had the deal in its balance."""
    broker, mt5 = broker_at("2026-07-06T10:00")
    broker.advance(1)
    broker.deposit(LOGIN, 500.0)
    broker.advance(1)
    clock, cache = BrokerClock(assumed="UTC+03:00"), SymbolCache()
    first, state = poll(broker, mt5, clock, PollState(), cache)
    broker.deposit(LOGIN, -200.0, "Withdrawal")
    broker.advance(1)
    second, _ = poll(broker, mt5, clock, state, cache)
    assert [(f.amount, f.after_previous_poll) for f in first.account.money_flows if f.amount == 500.0] == [(500.0, False)]
    assert [(f.amount, f.after_previous_poll) for f in second.account.money_flows if f.amount != 10_000] == \
        [(500.0, False), (-200.0, True)]  # the deposit again, as already reported: the reads overlap


def test_a_flat_account_without_ticks_still_knows_the_server_clock():
    broker = SimulatedBroker(seed=3, start_time=datetime(2026, 1, 12, 21, 59, 50, tzinfo=UTC).timestamp())
    broker.add_account(LOGIN, "pw", currency="GBP")  # GBP: no conversion, so no quote to read but a probe
    mt5 = SimulatedTerminal(broker, login=LOGIN, password="pw")
    assert mt5.initialize()
    clock, state, cache = BrokerClock(assumed="UTC+00:00"), PollState(), SymbolCache()
    for _ in range(5):
        broker.advance(1)
        outcome, state = poll(broker, mt5, clock, state, cache)
    assert clock.learned == 120
    assert outcome.account.server_time.date().isoformat() == "2026-01-12"
    broker.advance(10)
    outcome, state = poll(broker, mt5, clock, state, cache)
    assert outcome.account.server_time.date().isoformat() == "2026-01-13"  # 00:00 on a UTC+2 server


def test_a_holiday_is_closed_on_the_simulated_market_too():
    broker, mt5 = broker_at("2026-12-24T21:58")  # 16:58 New York on Christmas Eve
    broker.advance(5 * 60)
    before = mt5.symbol_info_tick("EURUSD")
    broker.advance(12 * 3600)  # Christmas Day
    assert mt5.symbol_info_tick("EURUSD") == before
    assert broker.market.is_open("EURUSD") is False


def test_a_credit_operation_moves_credit_not_balance():
    broker, mt5 = broker_at("2026-07-06T10:00")
    deal = broker.credit(LOGIN, 250.0)
    info = mt5.account_info()
    assert (info.balance, info.credit, info.equity) == (10_000.0, 250.0, 10_250.0)
    assert [d.type for d in broker.deals(LOGIN) if d.ticket == deal] == [c.DEAL_TYPE_CREDIT]


def test_a_broker_with_suffixed_symbols_keeps_their_base_symbols_sessions():
    import dataclasses

    from producers.mt5.simulator.market import DEFAULT_SYMBOLS

    renamed = {"XAUUSD": "XAUUSD#", "US30": "US30.cash", "EURUSD": "EURUSD.r"}
    specs = tuple(dataclasses.replace(s, name=renamed.get(s.name, s.name)) for s in DEFAULT_SYMBOLS)
    start = datetime(2026, 12, 2, 21, 59, tzinfo=UTC).timestamp()  # 16:59 New York
    broker = SimulatedBroker(seed=3, start_time=start, symbols=specs)
    broker.advance(30 * 60)
    assert not broker.market.is_open("XAUUSD#") and not broker.market.is_open("US30.cash")
    assert broker.market.is_open("EURUSD.r")
