"""Fixtures for the simulator tests: a seeded broker with one GBP account and its attached terminal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from producers.mt5 import constants as c
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal

LOGIN = 1001
PASSWORD = "secret"

DealBuilder = Callable[..., dict[str, Any]]


@pytest.fixture
def broker() -> SimulatedBroker:
    broker = SimulatedBroker(seed=7)
    broker.add_account(LOGIN, PASSWORD, currency="GBP", balance=10_000.0, leverage=100)
    return broker


@pytest.fixture
def mt5(broker: SimulatedBroker) -> SimulatedTerminal:
    terminal = SimulatedTerminal(broker, login=LOGIN, password=PASSWORD)
    assert terminal.initialize(), terminal.last_error()
    return terminal


@pytest.fixture
def deal(mt5: SimulatedTerminal) -> DealBuilder:
    """A valid market-order request at the current quote; keywords override or add fields."""

    def build(symbol: str = "EURUSD", type: int = c.ORDER_TYPE_BUY, volume: float = 0.1, **extra: Any) -> dict[str, Any]:
        tick = mt5.symbol_info_tick(symbol)
        buying = type == c.ORDER_TYPE_BUY
        request = {"action": c.TRADE_ACTION_DEAL, "symbol": symbol, "volume": volume, "type": type,
                   "price": tick.ask if buying else tick.bid, "deviation": 20, "magic": 42,
                   "comment": "test", "type_time": c.ORDER_TIME_GTC, "type_filling": c.ORDER_FILLING_IOC}
        return request | extra

    return build


@pytest.fixture
def close_request(mt5: SimulatedTerminal, deal: DealBuilder) -> Callable[..., dict[str, Any]]:
    """The close-by-ticket recipe of the reference: opposite deal naming the position."""

    def build(ticket: int, volume: float | None = None, **extra: Any) -> dict[str, Any]:
        (position,) = mt5.positions_get(ticket=ticket)
        close_type = c.ORDER_TYPE_SELL if position.type == c.POSITION_TYPE_BUY else c.ORDER_TYPE_BUY
        return deal(position.symbol, close_type, position.volume if volume is None else volume,
                    position=ticket, **extra)

    return build
