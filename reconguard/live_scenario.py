"""`reconguard simulate --pipeline`: a scenario through the real broker, database and services.

``simulate_live`` gives the run a broker and a database of its own: embedded ones, started fresh in
``DATA_DIR/simulate`` (the worker's log goes to its ``logs/``) and stopped at the end; or, where KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are
set, those servers, with topics under a prefix of the run's own (``sim-…``) and a database of its
own created on that server (``reconguard_sim_…``, left there for inspection and named in the
output), so a run never writes into the topics or tables of a running reconguard.

``play_live`` runs the pipeline as ``reconguard run`` runs it (``run_services``, the same service
entry points: the Faust worker as a child process, the projector, the executor, the poller) beside the
scenario's simulated side (``simulation.pipeline.LiveScenario``), unsupervised: a service that fails
fails the run rather than being restarted into a different world.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from infra.embedded import infrastructure
from infra.settings import Settings
from reconguard.runner import ServiceSpec, prepare, run_services
from simulation.pipeline import PROBES, LiveScenario, check
from simulation.runner import Outcome
from simulation.scenario import Scenario


@dataclass(frozen=True)
class BoundService(ServiceSpec):
    """A service given as a function rather than by its import path (the simulated side's, which share
    one in-memory simulator)."""

    service: Callable[..., Awaitable[None]] = field(default=None, compare=False)  # type: ignore[assignment]

    def load(self) -> Any:
        return self.service


def simulate_live(settings: Settings, scenario: Scenario, *, seed: int | None = None,
                  announce: Callable[[str], None] = print) -> Outcome:
    """Play ``scenario`` through the pipeline on servers of its own (see the module's docstring)."""
    check(scenario)  # before any server starts
    run, data_dir = uuid.uuid4().hex[:10], settings.data_dir / "simulate"
    with infrastructure(kafka_bootstrap_servers=settings.kafka_bootstrap_servers, database_url=settings.database_url,
                        data_dir=data_dir, tansu_bin=settings.tansu_bin, fresh=True) as endpoints:
        database_url = endpoints.database_url
        if settings.database_url is not None:
            from projections.replay import prepare_target

            database_url = asyncio.run(prepare_target(database_url, database=f"reconguard_sim_{run}")).database_url
            announce(f"database reconguard_sim_{run} created for this run on the given server (drop it when done)")
        resolved = settings.model_copy(update={"kafka_bootstrap_servers": endpoints.kafka_bootstrap_servers,
                                               "database_url": database_url, "topic_prefix": f"sim-{run}",
                                               "data_dir": data_dir})  # the worker's log: simulate/logs
        announce(f"broker {endpoints.kafka_bootstrap_servers}, topics sim-{run}.*; starting the pipeline")
        return asyncio.run(play_live(resolved, scenario, seed=seed, announce=announce))


async def play_live(settings: Settings, scenario: Scenario, *, seed: int | None = None,
                    announce: Callable[[str], None] = lambda line: None) -> Outcome:
    """Play ``scenario`` in real time through the services on ``settings``' broker, database and topic
    prefix (all the run's own). The worker, the projector and the executor start first; the scenario's
    clock starts once a probe has gone through the worker into Postgres. At the scenario's end the
    market, the platform and the poller stop; the rest runs until another probe has gone through and the
    topics are quiet, then stops."""
    from reconguard.cli import SERVICES

    async with _preparing:  # alembic's context is the process's: one migration at a time
        await prepare(settings)  # the schema at head, the topics created
    live = LiveScenario(settings, scenario, seed=seed)
    await live.write_users()  # before the worker starts: it reads the accounts' levels then
    simulated = live.services()
    backbone_specs = [SERVICES["worker"], SERVICES["projector"], BoundService("executor", "", simulated.pop("executor"))]
    side_specs = [BoundService(name, "", service) for name, service in simulated.items()]
    backbone_stop, side_stop, collected = asyncio.Event(), asyncio.Event(), asyncio.Event()
    collector = asyncio.create_task(live.collect(stop=collected), name="collector")
    backbone = asyncio.create_task(run_services(live.settings, backbone_specs, stop=backbone_stop), name="pipeline")
    side: asyncio.Task[None] | None = None
    try:
        await live.until_working(lambda: _raise_if_done(backbone, collector))
        announce(f"pipeline up; playing {scenario.name} for {(scenario.end() - scenario.start).total_seconds():g} s")
        live.start_clock()
        side = asyncio.create_task(run_services(live.settings, side_specs, stop=side_stop), name="simulated")
        ended = asyncio.create_task(live.ended.wait())
        await asyncio.wait([ended, side, backbone, collector], return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        _raise_if_done(backbone, collector, side)
        side_stop.set()
        await side
        await live.until_working(lambda: _raise_if_done(backbone, collector), probe=PROBES[1])  # the rest is taken
        await live.until_quiet()
        _raise_if_done(backbone, collector)
    finally:
        side_stop.set()
        backbone_stop.set()
        results = await asyncio.gather(*(t for t in (side, backbone) if t is not None), return_exceptions=True)
        collected.set()
        with contextlib.suppress(Exception):
            await collector
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise failed[0]
    return live.outcome()


_preparing = asyncio.Lock()


def _raise_if_done(*tasks: asyncio.Task[Any]) -> None:
    """A part that stopped before the end: raise its error (or say it stopped)."""
    for task in tasks:
        if task.done():
            error = None if task.cancelled() else task.exception()
            raise RuntimeError(f"{task.get_name()} stopped before the scenario's end: {error!r}") from error
