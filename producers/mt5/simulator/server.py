"""`reconguard simulator`: the simulated terminals served over RPyC classic, the protocol of mt5linux.

Each account's terminal has a port of its own, as each real terminal has its own mt5linux server:
a client connects, runs ``import MetaTrader5 as mt5`` in the server's namespace and calls ``mt5.*``,
so the production gateway (``Mt5LinuxGateway``) talks to it unchanged. The ports:
- ``base_port``: the control port. Its namespace holds ``broker`` (the scenario hooks: manual trades,
  gaps, quotes, disconnects) and ``endpoints`` (``"login=host:port,..."``, for RECONGUARD_MT5_ENDPOINTS);
- ``base_port + 1 + i``: the terminal of the i-th account in login order.
Like any RPyC classic server, every port runs whatever code a client sends: bind it to loopback or
to a private network only.

One thread serves every connection (the world has one lock anyway), a second moves the simulated
clock with the wall clock. Every call that changes the world is written to disk before its reply
(see ``journal``), so a killed simulator started again resumes with the same accounts, positions,
tickets and history; its clock catches up with the wall clock, as a real market went on meanwhile.
"""

from __future__ import annotations

import builtins
import contextlib
import inspect
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpyc.core.service import SlaveService
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_stream

from producers.demo.accounts import DEMO_PASSWORD, DEMO_USERS, open_accounts
from producers.mt5.simulator.broker import SimulatedBroker
from producers.mt5.simulator.journal import Journal, World

log = logging.getLogger(__name__)

DEFAULT_BASE_PORT = 18900
CATCH_UP_LIMIT_SECONDS = 3600.0
SAVE_SHARE = 20  # the clock's periodic save waits at least this many times as long as it took
LOAD_LOGIN_BASE = 52_000_000  # load accounts: 52000001, 52000002, ...
_NOT_SAVED = frozenset({
    "last_error", "version", "terminal_info", "account_info", "positions_total", "positions_get", "orders_total",
    "orders_get", "history_orders_total", "history_deals_total", "history_orders_get", "history_deals_get",
    "order_check", "order_calc_margin", "order_calc_profit", "symbols_total", "symbols_get", "symbol_info",
    "symbol_info_tick", "copy_rates_from", "copy_rates_from_pos", "copy_rates_range", "copy_ticks_from",
    "copy_ticks_range", "market_book_get",
    # the broker's scenario hooks that only read
    "now", "symbols", "tick", "deals", "authenticate",
    # a terminal's session and Market Watch are not the world: after a restart clients log in again, as
    # they must with a restarted terminal (and saving on each would stall every reconnecting client)
    "initialize", "login", "shutdown", "symbol_select", "market_book_add", "market_book_release"})


def load_login(index: int) -> int:
    return LOAD_LOGIN_BASE + 1 + index


def new_world(*, seed: int, load_accounts: int, start_time: float | None = None) -> World:
    """The demo's four accounts plus ``load_accounts`` flat GBP accounts, on a market that never closes."""
    broker = SimulatedBroker(seed, start_time=time.time() if start_time is None else start_time,
                             tick_interval=0.5, sessions=False)
    open_accounts(broker)
    for i in range(load_accounts):
        broker.add_account(load_login(i), DEMO_PASSWORD, currency="GBP", balance=10_000.0,
                           name=f"Load {i + 1}")
    world = World(broker)
    for login in sorted(broker.links):
        world.terminal(login, DEMO_PASSWORD)
    return world


class Persisted:
    """A terminal or the broker as clients see it: a call that may change the world is saved before it
    returns (so before its reply); attributes and reading calls pass straight through."""

    def __init__(self, target: object, save: Callable[[], None]) -> None:
        self._target, self._save = target, save

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name in _NOT_SAVED or name.startswith("_") or not callable(value) or isinstance(value, type):
            if inspect.ismethod(value):  # kept: the next lookup of a reading call costs nothing
                setattr(self, name, value)
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            finally:
                self._save()

        setattr(self, name, call)
        return call


def _namespace_service(names: dict[str, Any], module: object | None) -> type[SlaveService]:
    """A classic service whose namespace holds ``names`` and where ``import MetaTrader5`` is ``module``."""
    real_import = builtins.__import__

    def importer(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "MetaTrader5":
            if module is None:
                raise ImportError("this is the simulator's control port: MetaTrader5 is on the account ports")
            return module
        return real_import(name, *args, **kwargs)

    class NamespaceService(SlaveService):
        def __init__(self) -> None:
            super().__init__()
            self.namespace.update(names)
            self.namespace["__builtins__"] = dict(vars(builtins), __import__=importer)

    return NamespaceService


@dataclass
class Listener:
    login: int | None  # None: the control port
    socket: socket.socket
    service: type[SlaveService]


class SimulatorServer:
    """Serves a World until ``stop``; see the module docstring for the ports."""

    def __init__(self, world: World, journal: Journal | None, *, host: str = "127.0.0.1",
                 base_port: int = DEFAULT_BASE_PORT, advertised_host: str | None = None,
                 persist_interval: float = 1.0) -> None:
        self.world, self.journal, self.host = world, journal, host
        self.persist_interval = persist_interval
        self._save_lock = threading.Lock()
        logins = sorted(world.broker.links)
        self.ports = {login: base_port + 1 + i for i, login in enumerate(logins)}
        shown = advertised_host or host
        self.endpoints = ",".join(f"{login}={shown}:{port}" for login, port in self.ports.items())
        broker = Persisted(world.broker, self.save)
        control = _namespace_service({"broker": broker, "endpoints": self.endpoints}, None)
        self.listeners = [Listener(None, _listen(host, base_port), control)]
        for login, port in self.ports.items():
            module = Persisted(world.terminal(login, DEMO_PASSWORD), self.save)
            self.listeners.append(Listener(login, _listen(host, port), _namespace_service({}, module)))
        self.connections = 0

    def save(self) -> None:
        if self.journal is None:
            return
        with self._save_lock:
            self.journal.save(self.world)

    def serve(self, *, stop: threading.Event) -> None:
        """Serve every port and move the clock until ``stop``; the world is saved once more at the end."""
        clock = threading.Thread(target=self._follow_wall_clock, args=(stop,), name="simulator-clock", daemon=True)
        clock.start()
        try:
            self._serve_connections(stop)
        finally:
            stop.set()
            clock.join(timeout=5)
            for listener in self.listeners:
                listener.socket.close()
            self.save()

    def _serve_connections(self, stop: threading.Event) -> None:
        selector = selectors.DefaultSelector()
        for listener in self.listeners:
            selector.register(listener.socket, selectors.EVENT_READ, listener)
        try:
            while not stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    if isinstance(key.data, Listener):
                        self._accept(selector, key.data)
                    else:
                        self._serve_one(selector, key.fileobj, key.data)
        finally:
            for key in list(selector.get_map().values()):
                if not isinstance(key.data, Listener):
                    _drop(key.fileobj, key.data)  # clients see the terminal gone at once, not at a timeout
            selector.close()

    def _accept(self, selector: selectors.BaseSelector, listener: Listener) -> None:
        try:
            client, _ = listener.socket.accept()
        except (BlockingIOError, InterruptedError):
            return
        client.setblocking(True)
        client.settimeout(10.0)  # a client stopped half-way through a message cannot hang every account
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = connect_stream(SocketStream(client), listener.service, {"allow_pickle": True})
        selector.register(client, selectors.EVENT_READ, connection)
        self.connections += 1

    @staticmethod
    def _serve_one(selector: selectors.BaseSelector, client: Any, connection: Any) -> None:
        try:
            connection.serve(0)
        except Exception as error:  # noqa: BLE001 - one client's broken pipe never stops the others
            if not isinstance(error, EOFError | OSError):
                log.warning("simulator: dropping a connection after %r", error)
            selector.unregister(client)
            _drop(client, connection)

    def _follow_wall_clock(self, stop: threading.Event) -> None:
        """Simulated time is wall-clock time (as in the demo), so a restarted world first catches up with
        the time it was down; a world far behind (a test's fixed start) just moves on from where it is."""
        behind = time.time() - self.world.broker.now()
        offset = 0.0 if 0 <= behind < CATCH_UP_LIMIT_SECONDS else -behind
        last_save, interval = time.monotonic(), self.persist_interval
        while not stop.wait(0.05):  # a deal's time is at most this much behind the wall clock
            self.world.broker.advance_to(time.time() + offset)
            if time.monotonic() - last_save >= interval:
                started = time.monotonic()
                self.save()
                last_save = time.monotonic()
                # The clock's save only shortens a restart's catch-up (prices are regenerated from
                # the saved seeds), yet it holds the world's lock while it pickles: with thousands of
                # accounts (8 MB, 0.2 s at 2,000) every second stalled every terminal a fifth of the
                # time. So it spends at most 1/SAVE_SHARE of the time saving; changes still save at once.
                interval = max(self.persist_interval, (last_save - started) * SAVE_SHARE)


def _drop(client: socket.socket, connection: Any) -> None:
    """Shut the socket first: RPyC's close() would otherwise wait for the peer to acknowledge it."""
    with contextlib.suppress(OSError):
        client.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        connection.close()


def _listen(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1024)  # poller and executor start dozens of terminals at once each
    listener.setblocking(False)
    return listener


def open_world(state_dir: Path | None, *, seed: int, load_accounts: int) -> tuple[World, Journal | None, bool]:
    """The saved world if ``state_dir`` holds one, else a new one; (world, journal, resumed)."""
    journal = Journal(state_dir) if state_dir is not None else None
    world = journal.load() if journal is not None else None
    if world is not None:
        return world, journal, True
    world = new_world(seed=seed, load_accounts=load_accounts)
    if journal is not None:
        journal.save(world)
    return world, journal, False


def demo_logins() -> Iterable[int]:
    return (user.login for user in DEMO_USERS)
