"""Three library scenarios reach the same decisions in virtual time and through the real pipeline.

Each scenario is played twice: by ``simulation.runner.play`` (virtual time, the rules called directly),
and by ``reconguard.live_scenario.play_live`` (what ``reconguard simulate --pipeline`` runs): in real
time, with the real poller and close executor on simulated terminals, the Faust streams worker as a
child process and the projector, all through the session's real broker and PostgreSQL, each scenario
on topics and a database of its own. The three play at once, so the test lasts about as long as the
longest (90 s of market) plus the worker's start-up.

What is compared (``simulation.pipeline.compared``): the multiset of (type, account, reason or status,
symbol, tickets) of every decision except the per-poll ones: approvals, matches, divergences, guard
alerts (type and status), close commands and results, close records, locks. Each must appear as
often in both runs.

What is not, and why: times and ids (the pipeline runs on the wall clock, and its report ids are
random, so the ids derived from them differ); prices, equities and amounts (the market moves with the
wall clock between a step and the next poll); and the per-poll decisions (reports, assessments,
indeterminate reconciliations), whose number follows how many polls the wall clock fits in.

The scenarios: ``divergence-slippage`` (a divergence at the first report), ``divergence-closed-
outside-platform`` (a match, then a divergence after the trader's close), ``guard-drawdown-critical``
(warning, critical alert, a liquidation after the grace through the executor, its result and the lock).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from infra.embedded import Endpoints
from infra.kafka import ensure_topics
from infra.settings import Settings
from reconguard.live_scenario import play_live
from simulation.pipeline import PER_POLL, compared
from simulation.runner import Simulation, unmet
from simulation.scenario import load
from tests.support.servers import create_database, drop_database, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LIBRARY = Path(__file__).resolve().parents[2] / "docs" / "scenarios"
BOTH_WAYS = ("divergence-slippage", "divergence-closed-outside-platform", "guard-drawdown-critical")


async def _own_settings(servers: Endpoints, data_dir: Path) -> tuple[Settings, str]:
    """Settings on topics and a database of the scenario's own (migrated by ``play_live`` itself)."""
    prefix, name = f"sim-{uuid.uuid4().hex[:10]}", unique_name("sim")
    url = await create_database(servers.database_url, name)
    await ensure_topics(servers.kafka_bootstrap_servers, prefix, partitions=4)
    return Settings(KAFKA_BOOTSTRAP_SERVERS=servers.kafka_bootstrap_servers, DATABASE_URL=url, topic_prefix=prefix,
                    topic_partitions=4, data_dir=data_dir), name


async def test_three_library_scenarios_reach_the_same_decisions_in_virtual_time_and_through_the_pipeline(
        servers: Endpoints, server_data_dir: Path) -> None:
    scenarios = [load(LIBRARY / f"{name}.yaml") for name in BOTH_WAYS]
    own = [await _own_settings(servers, server_data_dir) for _ in scenarios]
    try:
        live = await asyncio.gather(*(play_live(settings, scenario) for (settings, _), scenario in zip(own, scenarios)))
    finally:
        for _, name in own:
            await drop_database(servers.database_url, name)
    for scenario, through_pipeline in zip(scenarios, live, strict=True):
        virtual = await Simulation(scenario).run()
        assert unmet(scenario, through_pipeline) == [], f"{scenario.name} through the pipeline"
        assert through_pipeline.polls >= 5, f"{scenario.name}: the poller hardly ran ({through_pipeline.polls} polls)"
        assert any(d["type"] in PER_POLL for d in through_pipeline.decisions)  # reports were read back too
        expected, found = compared(virtual.decisions), compared(through_pipeline.decisions)
        assert len(expected) >= 2, f"{scenario.name}: too few decisions to compare"
        assert found == expected, (f"{scenario.name}: only in virtual time {expected - found}; "
                                   f"only through the pipeline {found - expected}")
