"""One interface to an MT5 terminal, whichever way it is reached.

``Gateway`` is what the poller and the close executor need. The three implementations all wrap an
object with the ``MetaTrader5`` module's surface and differ only in how they get it:
- NativeGateway: the ``MetaTrader5`` package itself (Windows only);
- Mt5LinuxGateway: mt5linux's RPyC protocol to a terminal under Wine or in a container, or to
  `reconguard simulator`;
- SimulatorGateway: a SimulatedTerminal.

Calls block, as the package's do; async callers run them in a thread executor. Results and failures are
passed through unchanged (None plus ``last_error()``), so what a caller learns from a gateway is what the
terminal said, never a conclusion drawn here.
"""

from __future__ import annotations

import contextlib
import functools
import io
import pickle
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from producers.mt5 import constants as c
from producers.mt5.types import (
    AccountInfo,
    OrderCheckResult,
    OrderSendResult,
    SymbolInfo,
    TerminalInfo,
    Tick,
    TradeDeal,
    TradePosition,
    TradeRequest,
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
    """A terminal under Wine or in a container, reached through mt5linux's RPyC bridge.

    Speaks the bridge's protocol itself (RPyC classic: ``import MetaTrader5 as mt5`` in the server's
    namespace, then calls), so it needs ``rpyc`` but not the ``mt5linux`` client package, whose
    newer releases insist on starting a container of their own. Differences from a bare client:
    - results come back by value: a helper sent to the server at connect makes the calls and answers
      with their results as plain data, pickled (as mt5linux's own client obtains results; one bytes
      object for RPyC to carry, pickled and unpickled in C: RPyC's own pure-Python serialisation of
      records was most of a poll's cost on both sides). Records (struct sequences, named tuples)
      travel as their values; each record type's field names travel once per connection, and the
      values are rebuilt here by name as the types of ``producers.mt5.types``. No netref outlives a call;
    - a broken bridge is a terminal without IPC: the call returns None/False and ``last_error()``
      says (-10004, ...), as the package does when its terminal is gone. The next call reconnects
      (after a timeout, not before ``retry_seconds``) and repeats the last successful ``initialize`` first.
    One gateway serialises its calls (an RPyC connection serves one request at a time).
    """

    def __init__(self, host: str = "localhost", port: int = MT5LINUX_DEFAULT_PORT, *, timeout: float = 10.0,
                 retry_seconds: float = 1.0, connect: bool = True) -> None:
        """``connect=False``: do not refuse a bridge that is down now; the first call connects."""
        super().__init__(_Bridge(host, port, timeout=timeout, retry_seconds=retry_seconds))
        self.host, self.port = host, port
        if not connect:
            return
        try:
            self.module.connect()
        except _BRIDGE_ERRORS as error:
            raise GatewayUnavailable(f"no mt5linux RPyC server at {host}:{port}: {error}") from error

    def last_error(self) -> tuple[int, str]:
        return self.module.last_error()

    @property
    def connected(self) -> bool:
        """Whether the bridge is connected now; if not, the next call first connects (which can take
        up to ``timeout`` when the host does not answer)."""
        return self.module.connected

    def send_many(self, calls: Sequence[tuple[str, Mapping[str, Any]]]) -> Callable[[], list[Answer]]:
        """Several of this interface's reads (name, keyword arguments) in one round trip: the request
        leaves now, and the function returned waits for the answers, in order. Each answer is
        (result, None), or (None/False, last_error() right after that call). Each call is the very
        ``MetaTrader5`` call the method alone would make, run by a helper the bridge was sent at connect
        (RPyC classic runs the client's code): a real terminal behind mt5linux sees the same calls, only
        without a network round trip between them. Not waiting lets one thread have a request in flight
        to every terminal at once, where a thread per terminal waiting cost more than the reads."""
        recorder = _Recorder()
        module = ModuleGateway(recorder)
        for name, kwargs in calls:
            getattr(module, name)(**kwargs)
        assert len(recorder.calls) == len(calls), calls
        return self.module.send_many(recorder.calls)

    def close(self) -> None:
        self.module.disconnect()


#: A call's answer: (result, None), or (None/False, the ``last_error()`` that followed it).
Answer = tuple[Any, tuple[int, str] | None]


class _Recorder:
    """Stands in for the module to learn which module calls (name, args, kwargs) gateway methods make."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return functools.partial(self._record, name)

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))


def simulator_endpoints(address: str, *, timeout: float = 10.0) -> str:
    """``login=host:port,...`` of every terminal `reconguard simulator` serves, asked at its control port."""
    import rpyc
    from rpyc.core.service import ClassicClient

    host, _, port = address.rpartition(":")
    try:
        connection = rpyc.connect(host, int(port), service=ClassicClient, config={"sync_request_timeout": timeout})
    except _BRIDGE_ERRORS as error:
        raise GatewayUnavailable(f"no simulator control port at {address}: {error}") from error
    try:
        return str(connection.eval("endpoints"))
    finally:
        with contextlib.suppress(Exception):
            connection.close()


class SimulatorGateway(ModuleGateway):
    """A SimulatedTerminal behind the same interface (the embedded default and the test double)."""

    def __init__(self, module: Any) -> None:
        super().__init__(module)
        # ModuleGateway's argument-free reads only forward the call: here they are the terminal's own
        # functions, so each read of a poll (the simulation's hot path) costs one Python call less.
        self.terminal_info = module.terminal_info  # type: ignore[method-assign]
        self.account_info = module.account_info  # type: ignore[method-assign]


_BRIDGE_ERRORS = (OSError, EOFError, TimeoutError)
# Executed once per connection in the server's namespace (any Python 3 the bridge runs under). A request
# is pickled plain data, [(name, args, kwargs), ...]; so is the answer, (names, ((value, error), ...)), a
# record being {"record": type name, "values": (...)} and ``names`` the field names of each record type
# this connection has not been sent yet. Pickle protocol 4 reads alike on every Python 3.4 and later.
_REMOTE_HELPERS = """
import pickle
import MetaTrader5 as mt5

_reconguard_named = set()
_reconguard_scalars = frozenset((int, float, str, bool, type(None)))

def _reconguard_plain(value, names):
    if hasattr(value, '_asdict'):
        kind = type(value).__name__
        if kind not in _reconguard_named and kind not in names:
            names[kind] = tuple(value._asdict())
        values = tuple(value)
        if not _reconguard_scalars.issuperset(map(type, values)):
            values = tuple([_reconguard_plain(v, names) for v in values])
        return {'record': kind, 'values': values}
    if isinstance(value, (tuple, list)):
        return tuple(_reconguard_plain(v, names) for v in value)
    if hasattr(value, 'tolist') and not isinstance(value, (str, bytes)):
        return _reconguard_plain(value.tolist(), names)
    return value

def _reconguard_many(request):
    names, answers = {}, []
    for name, args, kwargs in pickle.loads(request):
        value = getattr(mt5, name)(*args, **kwargs)
        failed = value is None or value is False
        answers.append((_reconguard_plain(value, names), tuple(mt5.last_error()) if failed else None))
    data = pickle.dumps((names, tuple(answers)), 4)
    _reconguard_named.update(names)
    return data
"""
_RECORDS: dict[str, type] = {t.__name__: t for t in (AccountInfo, OrderCheckResult, OrderSendResult, SymbolInfo,
                                                     TerminalInfo, Tick, TradeDeal, TradePosition, TradeRequest)}
_SCALARS = frozenset({int, float, str, bool, type(None)})
Call = tuple[str, tuple[Any, ...], Mapping[str, Any]]


class _NamesLost(Exception):
    """An answer holds a record type whose field names this side never received (an answer was lost):
    reconnecting makes the server send them again."""


class _Bridge:
    """The remote ``MetaTrader5`` module behind one RPyC connection, called by value (see Mt5LinuxGateway)."""

    def __init__(self, host: str, port: int, *, timeout: float, retry_seconds: float) -> None:
        self.host, self.port, self.timeout, self.retry_seconds = host, port, timeout, retry_seconds
        self._lock = threading.Lock()
        self._connection: Any = None
        self._exchange: Any = None  # the server's _reconguard_many, called without waiting
        self._records: dict[str, Callable[[list[Any]], Any]] = {}  # record type -> builder, this connection's
        self._attached: tuple[tuple[Any, ...], dict[str, Any]] | None = None  # last good initialize
        self._failed_at = float("-inf")
        self._bridge_error: tuple[int, str] | None = None

    def connect(self) -> None:
        import rpyc
        from rpyc.core.service import ClassicClient

        connection = rpyc.connect(self.host, self.port, service=ClassicClient,
                                  config={"sync_request_timeout": self.timeout})
        try:
            connection.execute(_REMOTE_HELPERS)
            exchange = rpyc.async_(connection.namespace["_reconguard_many"])
        except BaseException:
            connection.close()
            raise
        self._connection, self._exchange, self._records = connection, exchange, {}
        if self._attached is not None:  # a restarted bridge or terminal: log in again as before
            self._invoke("initialize", *self._attached)

    @property
    def connected(self) -> bool:
        return self._connection is not None

    def disconnect(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def last_error(self) -> tuple[int, str]:
        with self._lock:
            if self._bridge_error is not None:
                return self._bridge_error
            value = self._invoke("last_error", (), {})
            return self._bridge_error or (int(value[0]), str(value[1]))

    def send_many(self, calls: Sequence[Call]) -> Callable[[], list[Answer]]:
        """Module calls in one round trip (see Mt5LinuxGateway.send_many); a broken bridge fails them all."""
        with self._lock:
            pending = self._send(calls)

        def answers() -> list[Answer]:
            with self._lock:
                found = self._receive(pending)
                if found is None:
                    failure = self._bridge_error or (c.RES_E_FAIL, "no answer")
                    return [(None, failure) for _ in calls]
                return found

        return answers

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                result = self._invoke(name, args, kwargs)
                if name == "initialize" and result:
                    self._attached = (args, kwargs)
                elif name == "shutdown":
                    self._attached = None
                return result

        return call

    def _invoke(self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        answers = self._receive(self._send([(name, args, kwargs)]))
        return None if answers is None else answers[0][0]

    def _send(self, calls: Sequence[Call]) -> tuple[Any, Any] | None:
        """The request on its way: (connection, its pending answer); None if the bridge is down."""
        try:
            if self._connection is None:
                if time.monotonic() - self._failed_at < self.retry_seconds:
                    return None  # the last connect timed out: do not make every call wait for another
                self.connect()
            request = pickle.dumps([(name, tuple(_plain(a) for a in args), {k: _plain(v) for k, v in kwargs.items()})
                                    for name, args, kwargs in calls], 4)
            pending = self._exchange(request)
            pending.set_expiry(self.timeout)
            return self._connection, pending
        except _BRIDGE_ERRORS as error:
            self._broken(error)
            return None

    def _receive(self, sent: tuple[Any, Any] | None) -> list[Answer] | None:
        """The answers of a request ``_send`` sent (waiting for them); None if the bridge broke meanwhile."""
        if sent is None:
            return None
        connection, pending = sent
        try:
            answers = self._decoded(pending.value)
        except (*_BRIDGE_ERRORS, _NamesLost) as error:
            if connection is self._connection:  # not a connection that was replaced since
                self._broken(error)
            return None
        self._bridge_error = None
        return answers

    def _broken(self, error: BaseException) -> None:
        self.disconnect()
        # A refused or reset connection is retried at the next call (it costs nothing and the bridge
        # may be back); only a connect that timed out (host unreachable) holds retries back.
        self._failed_at = time.monotonic() if isinstance(error, TimeoutError) else float("-inf")
        self._bridge_error = (c.RES_E_INTERNAL_FAIL_CONNECT, (f"No IPC connection (mt5linux bridge "
                                                             f"{self.host}:{self.port}: {error!r})"))

    def _decoded(self, data: bytes) -> list[Answer]:
        names, answers = _PlainUnpickler(io.BytesIO(data)).load()
        for kind, fields in names.items():
            self._records[kind] = _record_builder(kind, tuple(fields))
        return [(self._rebuilt(value), None if error is None else (int(error[0]), str(error[1])))
                for value, error in answers]

    def _rebuilt(self, value: Any) -> Any:
        """Records as this package's types (by field name)."""
        if type(value) is tuple:
            return tuple([self._rebuilt(v) for v in value])
        if type(value) is dict:
            values = value["values"]
            if not _SCALARS.issuperset(map(type, values)):
                values = [self._rebuilt(v) for v in values]
            build = self._records.get(value["record"])
            if build is None:
                raise _NamesLost(value["record"])
            return build(values)
        return value


def _record_builder(kind_name: str, fields: tuple[str, ...]) -> Callable[[list[Any]], Any]:
    """Builds a record of ``kind_name`` from its values in the server's field order."""
    kind = _RECORDS.get(kind_name)
    if kind is None:
        return lambda values: dict(zip(fields, values, strict=True))
    if fields == kind._fields:
        return kind._make

    def by_name(values: list[Any]) -> Any:
        given = dict(zip(fields, values, strict=True))
        return kind(**{name: given[name] for name in kind._fields})

    return by_name


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only (what the helper sends): no class or function is ever looked up."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the bridge sent {module}.{name}, not plain data")


def _plain(value: Any) -> Any:
    """Arguments as plain data: numpy scalars as Python numbers, datetimes as epoch seconds, a trade
    request as a dict of such."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value.item() if hasattr(value, "item") else value
