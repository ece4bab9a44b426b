"""The poller and the executor started while `reconguard simulator` is down (restarting after a kill)
wait for its control port with backoff, then serve its terminals: a real process started late."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from infra.settings import GatewaySettings
from producers.accounts import AccountRef, connect_gateways
from producers.mt5.gateway import GatewayUnavailable
from tests.integration.producers.test_simulator_server import ALICE, Simulator

pytestmark = pytest.mark.timeout(180)


def test_the_terminals_are_found_once_a_late_simulator_answers(tmp_path: Path):
    simulator = Simulator(tmp_path / "world")  # not started yet: the producers come first
    config = GatewaySettings(gateway="simulator", simulator=f"127.0.0.1:{simulator.base_port}")
    found: list = []
    waiting = threading.Thread(target=lambda: found.append(
        connect_gateways([AccountRef("u-alice", ALICE, "server")], config, attach=False)))
    waiting.start()
    try:
        time.sleep(3)
        assert waiting.is_alive() and not found, "still asking, not given up"
        simulator.start()
        waiting.join(90)
        ((account, gateway),) = found[0]
        assert account.user_id == "u-alice"
        assert gateway.initialize() and gateway.account_info().login == ALICE, "its terminal answers"
    finally:
        if simulator.process is not None and simulator.process.poll() is None:
            simulator.kill(signal.SIGTERM)
        waiting.join(10)


def test_a_simulator_that_never_answers_is_reported_after_the_wait(caplog):
    config = GatewaySettings(gateway="simulator", simulator="127.0.0.1:9")  # nothing listens on discard
    with pytest.raises(GatewayUnavailable):
        connect_gateways([AccountRef("u-alice", ALICE, "server")], config, simulator_wait=2.0)
    assert [r for r in caplog.records if "asking again" in r.getMessage()], "asked again before giving up"
