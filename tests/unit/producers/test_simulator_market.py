"""The simulated market: deterministic by seed, sessions and gaps, spreads, symbol specs, and speed."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from producers.mt5 import constants as c
from producers.mt5.simulator import DEFAULT_START, FaultConfig, SimulatedBroker, SimulatedTerminal
from producers.mt5.simulator.market import DEFAULT_SYMBOLS, FILLING_FOK, FILLING_IOC

ALL_TIME = (0, 2**31 - 1)
# January: New York keeps winter time, so the FX week ends Friday 22:00 UTC and starts Sunday 22:00 UTC.
FRIDAY_2158 = DEFAULT_START + 4 * 86400 + 13 * 3600 + 58 * 60
SUNDAY_2158 = DEFAULT_START + 6 * 86400 + 13 * 3600 + 58 * 60
UTC_CLOCK = "UTC+00:00"  # these tests are about sessions: a broker on UTC keeps their times readable
NOISY = FaultConfig(requote_probability=0.3, slippage_probability=0.5, slippage_points=3,
                    spread_widen_probability=0.01, gap_probability=0.002, gap_max_pct=0.3)


def _attached(broker: SimulatedBroker, login: int) -> SimulatedTerminal:
    broker.add_account(login, "pw", currency="GBP", balance=50_000.0)
    terminal = SimulatedTerminal(broker, login=login, password="pw")
    assert terminal.initialize()
    return terminal


def _script(seed: int, *, extra_account: bool = False) -> tuple[Any, ...]:
    """The same actions against a fresh broker: trades with SL/TP, time, a gap, a manual close."""
    broker = SimulatedBroker(seed=seed, faults=NOISY)
    mt5 = _attached(broker, 1)
    if extra_account:
        _attached(broker, 2).order_send({"action": 1, "symbol": "XAUUSD", "volume": 0.1, "type": 0,
                                         "type_filling": c.ORDER_FILLING_IOC})
    retcodes = []
    for _ in range(12):
        tick = mt5.symbol_info_tick("EURUSD")
        result = mt5.order_send({"action": c.TRADE_ACTION_DEAL, "symbol": "EURUSD", "volume": 0.1,
                                 "type": c.ORDER_TYPE_BUY, "price": tick.ask, "deviation": 2,
                                 "sl": round(tick.bid - 0.0008, 5), "tp": round(tick.bid + 0.0008, 5)})
        retcodes.append(result.retcode)
        broker.advance(300)
    broker.gap("GBPUSD", -0.5)
    for position in mt5.positions_get():
        broker.manual_close(1, position.ticket)
    ticks = mt5.copy_ticks_range("EURUSD", *ALL_TIME, c.COPY_TICKS_ALL)
    return tuple(retcodes), mt5.history_deals_get(*ALL_TIME), ticks.tobytes(), mt5.account_info()


def test_same_seed_same_history() -> None:
    first, second = _script(11), _script(11)
    assert first == second
    assert set(first[0]) >= {c.TRADE_RETCODE_DONE, c.TRADE_RETCODE_REQUOTE}  # the faults really fired
    assert {d.reason for d in first[1]} >= {c.DEAL_REASON_EXPERT, c.DEAL_REASON_CLIENT}


def test_different_seed_different_history() -> None:
    first, second = _script(11), _script(12)
    assert first[2] != second[2]
    assert first[1] != second[1]


def test_other_accounts_do_not_shift_the_market() -> None:
    assert _script(11)[2] == _script(11, extra_account=True)[2]


def test_no_ticks_over_the_weekend_and_a_gap_at_the_open() -> None:
    gappy = tuple(dataclasses.replace(s, session_gap_pct=2.0) for s in DEFAULT_SYMBOLS)
    broker = SimulatedBroker(seed=5, start_time=FRIDAY_2158, symbols=gappy, server_clock=UTC_CLOCK)
    mt5 = _attached(broker, 1)
    broker.advance(4 * 60)
    friday_close = mt5.symbol_info_tick("EURUSD")
    assert friday_close.time < FRIDAY_2158 + 120  # 22:00 UTC, 17:00 New York: the week is over
    broker.advance_to(SUNDAY_2158 + 3 * 60)
    ticks = mt5.copy_ticks_range("EURUSD", FRIDAY_2158 + 120, SUNDAY_2158 + 3 * 60, c.COPY_TICKS_ALL)
    assert ticks["time"].min() >= SUNDAY_2158 + 120  # nothing until Sunday 22:00
    assert abs(ticks["bid"][0] / friday_close.bid - 1) > 0.001


def test_a_feed_paused_over_the_weekend_still_opens_with_a_gap() -> None:
    """A step at which nothing ticks asks whether every market is shut, and then marks every symbol closed,
    a paused one too (a scenario's frozen feed): so the week opens with a gap on that symbol as well."""
    gappy = tuple(dataclasses.replace(s, session_gap_pct=2.0) for s in DEFAULT_SYMBOLS)
    broker = SimulatedBroker(seed=5, start_time=FRIDAY_2158 - 3600, symbols=gappy, server_clock=UTC_CLOCK)
    mt5 = _attached(broker, 1)
    market = broker.market.symbols["EURUSD"]
    market.step = lambda *args, **kwargs: False  # type: ignore[method-assign]  # paused before the close
    paused = mt5.symbol_info_tick("EURUSD")
    broker.advance_to(SUNDAY_2158 + 60)
    del market.step
    broker.advance_to(SUNDAY_2158 + 3 * 60)
    opened = mt5.copy_ticks_range("EURUSD", SUNDAY_2158, SUNDAY_2158 + 3 * 60, c.COPY_TICKS_ALL)
    assert abs(opened["bid"][0] / paused.bid - 1) > 0.001


def test_xauusd_and_us30_have_a_daily_break() -> None:
    broker = SimulatedBroker(seed=5, start_time=DEFAULT_START + 13 * 3600 + 59 * 60,  # Monday 21:59 UTC
                             server_clock=UTC_CLOCK)
    mt5 = _attached(broker, 1)
    broker.advance(30 * 60)  # 17:00-18:00 New York, 22:00-23:00 UTC in winter: metals and indices pause
    assert mt5.symbol_info_tick("XAUUSD").time < DEFAULT_START + 14 * 3600
    assert mt5.symbol_info_tick("US30").time < DEFAULT_START + 14 * 3600
    assert mt5.symbol_info_tick("EURUSD").time >= DEFAULT_START + 14 * 3600 + 29 * 60


def test_spread_widening_hook_and_fault() -> None:
    broker = SimulatedBroker(seed=5)
    mt5 = _attached(broker, 1)
    normal = mt5.symbol_info("EURUSD").spread
    broker.widen_spread("EURUSD", factor=10.0, ticks=5)
    broker.advance(1)
    assert mt5.symbol_info("EURUSD").spread >= 5 * normal
    broker.advance(10)
    assert mt5.symbol_info("EURUSD").spread < 3 * normal
    broker.set_faults(spread_widen_probability=1.0, spread_widen_factor=8.0)
    broker.advance(2)
    assert mt5.symbol_info("GBPUSD").spread >= 5 * DEFAULT_SYMBOLS[1].spread_points * 0.8


def test_volatility_is_per_symbol_and_tick_interval_is_configurable() -> None:
    calm = tuple(dataclasses.replace(s, volatility_per_hour=0.0) if s.name == "EURGBP" else s
                 for s in DEFAULT_SYMBOLS)
    broker = SimulatedBroker(seed=5, symbols=calm, tick_interval=0.25)
    mt5 = _attached(broker, 1)
    broker.advance(60)
    assert mt5.symbol_info_tick("EURGBP").bid == DEFAULT_SYMBOLS[3].start_bid
    ticks = mt5.copy_ticks_from("EURUSD", DEFAULT_START, 1000, c.COPY_TICKS_ALL)
    assert 150 < len(ticks) <= 241 and set(ticks["time_msc"] % 1000) <= {0, 250, 500, 750}


@pytest.mark.parametrize(("symbol", "digits", "contract", "filling", "exemode", "currencies"), [
    pytest.param("EURUSD", 5, 100_000.0, FILLING_FOK | FILLING_IOC, c.SYMBOL_TRADE_EXECUTION_INSTANT,
                 ("EUR", "USD", "EUR"), id="EURUSD"),
    pytest.param("GBPUSD", 5, 100_000.0, FILLING_FOK | FILLING_IOC, c.SYMBOL_TRADE_EXECUTION_INSTANT,
                 ("GBP", "USD", "GBP"), id="GBPUSD"),
    pytest.param("USDJPY", 3, 100_000.0, FILLING_FOK | FILLING_IOC, c.SYMBOL_TRADE_EXECUTION_INSTANT,
                 ("USD", "JPY", "USD"), id="USDJPY"),
    pytest.param("EURGBP", 5, 100_000.0, FILLING_FOK | FILLING_IOC, c.SYMBOL_TRADE_EXECUTION_INSTANT,
                 ("EUR", "GBP", "EUR"), id="EURGBP"),
    pytest.param("XAUUSD", 2, 100.0, FILLING_IOC, c.SYMBOL_TRADE_EXECUTION_MARKET, ("XAU", "USD", "USD"),
                 id="XAUUSD"),
    pytest.param("US30", 2, 1.0, FILLING_FOK, c.SYMBOL_TRADE_EXECUTION_MARKET, ("USD", "USD", "USD"), id="US30"),
])
def test_symbol_info_is_realistic(symbol: str, digits: int, contract: float, filling: int, exemode: int,
                                  currencies: tuple[str, str, str]) -> None:
    mt5 = _attached(SimulatedBroker(seed=5), 1)
    info = mt5.symbol_info(symbol)
    assert (info.digits, info.point, info.trade_contract_size) == (digits, 10.0 ** -digits, contract)
    assert (info.filling_mode, info.trade_exemode) == (filling, exemode)
    assert (info.currency_base, info.currency_profit, info.currency_margin) == currencies
    assert info.ask > info.bid > 0 and info.spread == round((info.ask - info.bid) / info.point)
    assert info.volume_min <= info.volume_step * 10 <= info.volume_max
    assert info.trade_stops_level > 0 and info.trade_tick_value > 0
    assert isinstance(info.spread, int) and isinstance(info.time, int) and isinstance(info.select, bool)


def test_a_thousand_accounts_each_read_their_own_figures() -> None:
    """One broker serves 1,000 accounts (their read speed is `python -m bench poller`'s, not a test's)."""
    broker = SimulatedBroker(seed=5)
    terminals = []
    for login in range(1, 1001):
        broker.add_account(login, "pw", currency="GBP")
        broker.manual_open(login, "EURUSD", c.ORDER_TYPE_BUY, 0.1)
        broker.manual_open(login, "USDJPY", c.ORDER_TYPE_SELL, 0.1)
        terminal = SimulatedTerminal(broker, login=login, password="pw")
        terminal.initialize()
        terminals.append(terminal)
    broker.advance(5)
    for login, terminal in enumerate(terminals, start=1):
        assert terminal.account_info().login == login and len(terminal.positions_get()) == 2
