"""The mt5linux gateway against a plain RPyC classic server whose ``MetaTrader5`` is shaped like the real
package, not like our simulator: struct sequences with ``_asdict()`` and no ``_fields``, fields in
another order or one more than ours, numpy scalars, a nested request, a record type we do not know.

What the gateway returns must be the package's values, rebuilt by field name as our types.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from rpyc.core.service import SlaveService
from rpyc.utils.server import ThreadedServer

from infra.embedded import wait_until
from producers.mt5.gateway import Mt5LinuxGateway
from producers.mt5.types import OrderSendResult, TradePosition, TradeRequest


def struct_sequence(name: str, fields: list[str]) -> type:
    """A type like the package's results: a tuple whose ``_asdict()`` names its values (no ``_fields``)."""

    def new(cls: type, **values: Any) -> tuple[Any, ...]:
        return tuple.__new__(cls, [values[f] for f in fields])

    def asdict(self: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(fields, self, strict=True))

    return type(name, (tuple,), {"__new__": new, "_asdict": asdict})


# One field more than ours, and two swapped, as another build of the package might have them.
POSITION_FIELDS = [f for f in TradePosition._fields if f not in ("volume", "symbol")] + ["symbol", "volume", "extra"]
RealPosition = struct_sequence("TradePosition", POSITION_FIELDS)
RealRequest = struct_sequence("TradeRequest", list(TradeRequest._fields))
RealSendResult = struct_sequence("OrderSendResult", list(OrderSendResult._fields))
BookEntry = struct_sequence("SomethingNew", ["price", "size"])


def position(ticket: int) -> tuple[Any, ...]:
    values = dict.fromkeys(TradePosition._fields, 0)
    values.update(ticket=np.uint64(ticket), volume=np.float64(0.25), price_open=1.1, symbol="EURUSD",
                  comment="", external_id="", extra="ignored")
    return RealPosition(**values)


def package() -> types.ModuleType:
    module = types.ModuleType("MetaTrader5")
    request = RealRequest(**{f: (0.5 if f == "volume" else "" if f in ("symbol", "comment") else 0)
                             for f in TradeRequest._fields})
    result = RealSendResult(**{**dict.fromkeys(OrderSendResult._fields, 0), "retcode": np.int32(10009),
                               "comment": "done", "request": request})
    calls = {"initialize": True, "last_error": (1, "Success"), "positions_get": (position(7), position(8)),
             "order_send": result, "market_book_get": (BookEntry(price=1.2, size=3),), "orders_get": ()}
    for name, value in calls.items():
        setattr(module, name, lambda *args, value=value, **kwargs: value)
    return module


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mt5LinuxGateway]:
    monkeypatch.setitem(sys.modules, "MetaTrader5", package())  # what the server's `import MetaTrader5` finds
    server = ThreadedServer(SlaveService, hostname="127.0.0.1", port=0)
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    wait_until(lambda: server.active, timeout=10, what="the RPyC server listening")
    gateway = Mt5LinuxGateway("127.0.0.1", server.port)
    try:
        yield gateway
    finally:
        gateway.close()
        server.close()
        thread.join(timeout=5)


def test_records_come_back_by_field_name_as_plain_python_values(gateway: Mt5LinuxGateway) -> None:
    assert gateway.initialize()
    for _ in range(2):  # the field names travel with the first answer only: the second is rebuilt alike
        positions = gateway.positions_get()
        assert [type(p) for p in positions] == [TradePosition, TradePosition]
        assert [(p.ticket, p.symbol, p.volume) for p in positions] == [(7, "EURUSD", 0.25), (8, "EURUSD", 0.25)]
        assert {type(p.ticket) for p in positions} == {int}
    assert gateway.positions_get(symbol="NONE") == gateway.positions_get()  # a keyword reaches the package


def test_a_nested_request_and_a_trade_request_dict_travel_by_value(gateway: Mt5LinuxGateway) -> None:
    result = gateway.order_send({"action": 1, "symbol": "EURUSD", "volume": np.float64(0.5)})
    assert isinstance(result, OrderSendResult) and isinstance(result.request, TradeRequest)
    assert (result.retcode, result.comment, result.request.volume) == (10009, "done", 0.5)


def test_empty_results_and_unknown_record_types_are_kept(gateway: Mt5LinuxGateway) -> None:
    answers = gateway.send_many([("positions_get", {"ticket": 7})])()
    assert len(answers) == 1 and answers[0][1] is None
    assert gateway.module.orders_get() == ()
    assert gateway.module.market_book_get("EURUSD") == ({"price": 1.2, "size": 3},)
