"""`reconguard simulator` as a real process: the mt5linux gateway trades through it, survives its kill -9,
and finds the same world (positions, tickets, history) when it is started again."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from producers.demo.accounts import DEMO_USERS
from producers.mt5 import constants as c
from producers.mt5.gateway import Mt5LinuxGateway, simulator_endpoints

ALICE = DEMO_USERS[0].login


def wait_until(condition: Callable[[], bool], *, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(0.1)


class Simulator:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir, self.base_port = state_dir, random.randrange(20_000, 32_000)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reconguard.cli", "simulator", "--accounts", "2", "--base-port",
             str(self.base_port), "--state-dir", str(self.state_dir)], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=os.environ | {"RECONGUARD_LOG_LEVEL": "WARNING"})
        wait_until(self._answers, timeout=90, message="simulator control port")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"simulator exited: {self.process.stdout.read().decode()}")  # type: ignore[union-attr]
        try:
            return bool(simulator_endpoints(f"127.0.0.1:{self.base_port}", timeout=2))
        except Exception:  # noqa: BLE001 - not listening yet
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=30)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    sim = Simulator(tmp_path / "world")
    sim.start()
    yield sim
    if sim.process is not None and sim.process.poll() is None:
        sim.kill(signal.SIGTERM)


def _buy(gateway: Mt5LinuxGateway, volume: float) -> int:
    tick = gateway.symbol_info_tick("EURUSD")
    result = gateway.order_send({"action": c.TRADE_ACTION_DEAL, "symbol": "EURUSD", "volume": volume,
                                 "type": c.ORDER_TYPE_BUY, "price": tick.ask, "deviation": 50, "magic": 7,
                                 "comment": "kept", "type_time": c.ORDER_TIME_GTC,
                                 "type_filling": c.ORDER_FILLING_FOK})
    assert result is not None and result.retcode == c.TRADE_RETCODE_DONE, (result, gateway.last_error())
    return result.order


def test_endpoints_name_one_port_per_account(simulator: Simulator) -> None:
    endpoints = dict(item.split("=") for item in simulator_endpoints(f"127.0.0.1:{simulator.base_port}").split(","))
    assert len(endpoints) == len(DEMO_USERS) + 2
    assert endpoints[str(ALICE)] == f"127.0.0.1:{simulator.base_port + 1}"


def test_a_killed_simulator_resumes_its_world_and_the_gateway_reconnects(simulator: Simulator) -> None:
    gateway = Mt5LinuxGateway("127.0.0.1", simulator.base_port + 1, timeout=5, retry_seconds=0.2)
    assert gateway.initialize(), gateway.last_error()
    ticket = _buy(gateway, 0.3)
    deals_before = gateway.history_deals_get(position=ticket)

    simulator.kill(signal.SIGKILL)
    assert gateway.positions_get() is None
    code, message = gateway.last_error()
    assert code == c.RES_E_INTERNAL_FAIL_CONNECT and "No IPC connection" in message

    simulator.start()
    wait_until(lambda: gateway.positions_get() is not None, timeout=20, message="gateway reconnected")
    (position,) = gateway.positions_get()
    assert (position.ticket, position.volume, position.comment) == (ticket, 0.3, "kept")
    assert gateway.history_deals_get(position=ticket) == deals_before
    assert gateway.account_info().login == ALICE  # logged in again by itself after the reconnect
    assert _buy(gateway, 0.1) > ticket  # tickets go on from where they were, never reused
    gateway.close()
