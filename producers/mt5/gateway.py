"""One interface to an MT5 terminal, whichever way it is reached.

``Gateway`` is what the poller and the close executor need. The three implementations all wrap an
object with the ``MetaTrader5`` module's surface and differ only in how they get it:
- NativeGateway: the ``MetaTrader5`` package itself (Windows only);
- Mt5LinuxGateway: an ``mt5linux`` client talking RPyC to a terminal under Wine or in a container;
- SimulatorGateway: a SimulatedTerminal.

Calls block, as the package's do; async callers run them in a thread executor. Results and failures are
passed through unchanged (None plus ``last_error()``), so what a caller learns from a gateway is what the
terminal said, never a conclusion drawn here.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from producers.mt5.types import (
    AccountInfo,
    OrderCheckResult,
    OrderSendResult,
    SymbolInfo,
    TerminalInfo,
    Tick,
    TradeDeal,
    TradePosition,
)

MT5LINUX_DEFAULT_PORT = 18812


class GatewayUnavailable(RuntimeError):
    """This way of reaching a terminal cannot work here (wrong platform, missing package, no server)."""


@runtime_checkable
class Gateway(Protocol):
    def initialize(self, *, login: int | None = None, password: str | None = None, server: str | None = None,
                   path: str | None = None, timeout: int | None = None) -> bool: ...

    def shutdown(self) -> bool: ...

    def last_error(self) -> tuple[int, str]: ...

    def terminal_info(self) -> TerminalInfo | None: ...

    def account_info(self) -> AccountInfo | None: ...

    def positions_get(self, *, ticket: int | None = None,
                      symbol: str | None = None) -> tuple[TradePosition, ...] | None: ...

    def symbol_info(self, symbol: str) -> SymbolInfo | None: ...

    def symbol_info_tick(self, symbol: str) -> Tick | None: ...

    def symbol_select(self, symbol: str, enable: bool = True) -> bool: ...

    def history_deals_get(self, *, position: int | None = None, ticket: int | None = None,
                          date_from: datetime | None = None,
                          date_to: datetime | None = None) -> tuple[TradeDeal, ...] | None: ...

    def order_send(self, request: Mapping[str, Any]) -> OrderSendResult | None: ...

    def order_check(self, request: Mapping[str, Any]) -> OrderCheckResult | None: ...


class ModuleGateway:
    """A Gateway over any object shaped like the MetaTrader5 module."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def initialize(self, *, login: int | None = None, password: str | None = None, server: str | None = None,
                   path: str | None = None, timeout: int | None = None) -> bool:
        # Only pass what was given: the package treats a missing key differently from None.
        options = {k: v for k, v in (("login", login), ("password", password), ("server", server),
                                     ("timeout", timeout)) if v is not None}
        args = (path,) if path is not None else ()
        return bool(self.module.initialize(*args, **options))

    def shutdown(self) -> bool:
        return bool(self.module.shutdown())

    def last_error(self) -> tuple[int, str]:
        code, message = self.module.last_error()
        return int(code), str(message)

    def terminal_info(self) -> TerminalInfo | None:
        return self.module.terminal_info()

    def account_info(self) -> AccountInfo | None:
        return self.module.account_info()

    def positions_get(self, *, ticket: int | None = None,
                      symbol: str | None = None) -> tuple[TradePosition, ...] | None:
        if ticket is not None:
            return self.module.positions_get(ticket=ticket)
        if symbol is not None:
            return self.module.positions_get(symbol=symbol)
        return self.module.positions_get()

    def symbol_info(self, symbol: str) -> SymbolInfo | None:
        return self.module.symbol_info(symbol)

    def symbol_info_tick(self, symbol: str) -> Tick | None:
        return self.module.symbol_info_tick(symbol)

    def symbol_select(self, symbol: str, enable: bool = True) -> bool:
        """A real terminal only quotes symbols in Market Watch; select one before reading its tick."""
        return bool(self.module.symbol_select(symbol, enable))

    def history_deals_get(self, *, position: int | None = None, ticket: int | None = None,
                          date_from: datetime | None = None,
                          date_to: datetime | None = None) -> tuple[TradeDeal, ...] | None:
        if position is not None:
            return self.module.history_deals_get(position=position)
        if ticket is not None:
            return self.module.history_deals_get(ticket=ticket)
        if date_from is None or date_to is None:
            raise ValueError("history_deals_get needs position=, ticket= or both dates")
        return self.module.history_deals_get(date_from, date_to)

    def order_send(self, request: Mapping[str, Any]) -> OrderSendResult | None:
        return self.module.order_send(dict(request))

    def order_check(self, request: Mapping[str, Any]) -> OrderCheckResult | None:
        return self.module.order_check(dict(request))


class NativeGateway(ModuleGateway):
    """The MetaTrader5 package, imported on construction (it only exists as Windows wheels).

    The package holds one terminal connection per process, so a process serves one account at a time.
    """

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise GatewayUnavailable("the MetaTrader5 package only runs on Windows; use the simulator or mt5linux")
        try:
            import MetaTrader5  # type: ignore[import-not-found]
        except ImportError as error:
            raise GatewayUnavailable("the MetaTrader5 package is not installed (pip install MetaTrader5)") from error
        super().__init__(MetaTrader5)


class Mt5LinuxGateway(ModuleGateway):
    """A terminal under Wine or in a container, reached through mt5linux's RPyC bridge."""

    def __init__(self, host: str = "localhost", port: int = MT5LINUX_DEFAULT_PORT) -> None:
        try:
            from mt5linux import MetaTrader5  # type: ignore[import-not-found]
        except ImportError as error:
            raise GatewayUnavailable("mt5linux is not installed (pip install mt5linux)") from error
        try:
            client = MetaTrader5(host=host, port=port)
        except (OSError, RuntimeError, EOFError) as error:  # refused, unreachable, no container runtime
            raise GatewayUnavailable(f"no mt5linux RPyC server at {host}:{port}: {error}") from error
        super().__init__(client)
        self.host, self.port = host, port

    def order_send(self, request: Mapping[str, Any]) -> OrderSendResult | None:
        # mt5linux embeds str(request) in a remote expression: plain ints/floats/strs only.
        return self.module.order_send({k: _plain(v) for k, v in request.items()})


class SimulatorGateway(ModuleGateway):
    """A SimulatedTerminal behind the same interface (the embedded default and the test double)."""


def _plain(value: Any) -> Any:
    """numpy scalars repr as np.float64(...) and would not evaluate on the remote side."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value.item() if hasattr(value, "item") else value
