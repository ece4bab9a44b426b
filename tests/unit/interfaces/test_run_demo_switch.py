"""`reconguard run --demo/--no-demo`: the demo only with the embedded servers unless asked for."""

from __future__ import annotations

import pytest

from infra.settings import Settings
from reconguard.cli import EMBEDDED_RUN, PRODUCTION_RUN, demo_wanted

EMBEDDED = {}
REAL = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "DATABASE_URL": "postgresql://u:p@db:5432/reconguard"}


@pytest.fixture(autouse=True)
def _no_servers_from_the_environment(monkeypatch):
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "RECONGUARD_KAFKA_BOOTSTRAP_SERVERS",
                 "RECONGUARD_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("description", "servers", "switch", "expected"), [
    ("embedded servers, no switch: the demo", EMBEDDED, None, True),
    ("real servers, no switch: no demo data in production", REAL, None, False),
    ("real broker, embedded database: not all embedded, no demo", {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, None, False),
    ("real servers, --demo: asked for", REAL, True, True),
    ("embedded servers, --no-demo: production services on the embedded servers", EMBEDDED, False, False),
])
def test_demo_wanted(description, servers, switch, expected):
    assert demo_wanted(Settings(**servers), switch) is expected, description


def test_without_the_demo_run_starts_the_poller_and_executor_on_real_terminals():
    assert {s.name for s in PRODUCTION_RUN} == {"projector", "worker", "poller", "executor", "api", "telegram",
                                                  "archiver"}
    assert "demo" in {s.name for s in EMBEDDED_RUN} and not {"poller", "executor"} & {s.name for s in EMBEDDED_RUN}
