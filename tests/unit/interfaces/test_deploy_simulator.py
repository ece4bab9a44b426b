"""deploy/docker-compose.simulator.yml: the production services on `reconguard simulator`, as separate containers."""

from __future__ import annotations

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def _services() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.simulator.yml").read_text())["services"]


def test_the_poller_and_the_executor_reach_the_simulator_through_the_mt5linux_gateway():
    services = _services()
    for name in ("poller", "executor", "platform"):
        env = services[name]["environment"]
        assert env["RECONGUARD_MT5_GATEWAY"] == "simulator" and env["RECONGUARD_MT5_SIMULATOR"] == "simulator:18900"
        assert services[name]["depends_on"]["simulator"]["condition"] == "service_healthy"
    assert "image" not in services["poller"], "the base file's service, only pointed elsewhere"


def test_the_simulator_keeps_its_world_in_a_volume_and_stays_off_the_host():
    simulator = _services()["simulator"]
    command = simulator["command"]
    assert command[0] == "simulator" and command[command.index("--state-dir") + 1].startswith("/data")
    assert simulator["volumes"] == ["simulator-data:/data"] and "ports" not in simulator
    assert simulator["restart"] == "unless-stopped"
