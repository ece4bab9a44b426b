"""Starting services: endpoints, migrations, topics, and running several services until stopped.

`reconguard run` supervises what it runs: a service that crashes (or returns before the stop) is
started again after a backoff while the others go on; its restarts are counted in
``infra.service.SUPERVISION`` (read by /health and the live view) and in ``service_restarts_total``.
A crash loop degrades health and publishes an ``OperatorAlertRaised`` on the operator-alerts topic,
but never stops the guard. The embedded servers are watched too: PostgreSQL is started again on its
data if its postmaster dies, the broker is started again and its topics restored from the event archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from aiokafka.errors import KafkaError

from infra.db import migrate, while_database_down
from infra.dburl import redacted
from infra.embedded import Endpoints, infrastructure
from infra.kafka import ensure_topics, make_producer, publish_many
from infra.service import SUPERVISION, Service, ServiceStatus, Supervision, in_crash_loop, restart_delay
from infra.settings import Settings
from schemas import observed, utcnow
from schemas.operations import OperatorAlertRaised
from schemas.topics import OPERATOR_ALERTS

log = logging.getLogger(__name__)


class EndpointsUnknown(RuntimeError):
    pass


def _run_file(settings: Settings) -> Path:
    return settings.data_dir / "run.json"


def resolve_endpoints(settings: Settings) -> Settings:
    """Settings with a broker and a database: from the environment, else from a running `reconguard run`."""
    if settings.kafka_bootstrap_servers and settings.database_url:
        return settings
    path = _run_file(settings)
    if path.exists():
        known = json.loads(path.read_text())
        if psutil.pid_exists(known["pid"]):
            return settings.model_copy(update={
                "kafka_bootstrap_servers": settings.kafka_bootstrap_servers or known["kafka_bootstrap_servers"],
                "database_url": settings.database_url or known["database_url"]})
    raise EndpointsUnknown(
        "no broker or database: set KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL, or start `reconguard run` "
        "(its embedded servers are found through " + str(path) + ")")


@contextlib.contextmanager
def embedded_or_given(settings: Settings) -> Iterator[Settings]:
    """Start what the settings do not point at, record it for other commands, and yield full settings.

    The embedded broker keeps its log in memory, so each run starts with empty topics; the embedded
    database is kept (users, tokens, projections, the event archive), and `run` restores the topics
    from the archive before any service starts (``restore_history``).
    """
    with infrastructure(kafka_bootstrap_servers=settings.kafka_bootstrap_servers,
                        database_url=settings.database_url, data_dir=settings.data_dir,
                        tansu_bin=settings.tansu_bin) as endpoints:
        global _running_endpoints
        resolved = _with(settings, endpoints)
        _running_endpoints = endpoints
        path = _run_file(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds the database password
        with os.fdopen(descriptor, "w") as file:
            json.dump({"pid": os.getpid(), "kafka_bootstrap_servers": endpoints.kafka_bootstrap_servers,
                       "database_url": endpoints.database_url}, file)
        _interrupt_on_sigterm()
        try:
            yield resolved
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM before the services' own handlers: still an orderly stop
            log.warning("stopped while starting")
        finally:
            _running_endpoints = None
            path.unlink(missing_ok=True)


def _interrupt_on_sigterm() -> None:
    """Until `run` installs its stop handlers, SIGTERM stops like Ctrl-C (servers stopped, exit code 0)."""
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def _with(settings: Settings, endpoints: Endpoints) -> Settings:
    return settings.model_copy(update={"kafka_bootstrap_servers": endpoints.kafka_bootstrap_servers,
                                       "database_url": endpoints.database_url})


async def prepare(settings: Settings) -> None:
    """Migrate the database and create the topics: idempotent, safe for every service to call."""
    assert settings.database_url and settings.kafka_bootstrap_servers
    log.info("database %s: alembic upgrade head", redacted(settings.database_url))
    await asyncio.to_thread(migrate, settings.database_url)
    await prepare_topics(settings)


async def prepare_when_reachable(settings: Settings, *, stop: asyncio.Event) -> None:
    """``prepare``, waiting with backoff (up to 5 s apart) while the database or the broker cannot be
    reached: a service started during an outage (an orchestrator's restart) waits it out, never exits."""
    await while_database_down(lambda: prepare(settings), stop=stop, what="start-up", maximum=5.0,
                              also=(KafkaError,))


async def prepare_topics(settings: Settings) -> None:
    assert settings.kafka_bootstrap_servers
    await ensure_topics(settings.kafka_bootstrap_servers, settings.topic_prefix,
                        partitions=settings.topic_partitions)


async def restore_history(settings: Settings) -> None:
    """Fill every empty topic from the event archive (the embedded broker starts empty at each run)."""
    from projections.history import restore_empty_topics

    restored = await restore_empty_topics(settings)
    if restored:
        log.info("history restored from the archive: %s",
                 ", ".join(f"{topic} {count}" for topic, count in sorted(restored.items())))


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    target: str  # "module:function"

    def load(self) -> Service:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


async def run_services(settings: Settings, specs: list[ServiceSpec], *, stop: asyncio.Event,
                       supervise: bool = False) -> None:
    """Run services until ``stop`` is set.

    Unsupervised (one service on its own, under an orchestrator that restarts processes): the first
    failure stops them all and is raised. Supervised (`reconguard run`): a failed service starts again
    with backoff while the others go on, and the embedded PostgreSQL is kept alive."""
    if supervise:
        await _supervised(settings, specs, stop=stop)
        return
    tasks = {asyncio.create_task(spec.load()(settings, stop=stop), name=spec.name): spec for spec in specs}
    stopper = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in done if t is not stopper and t.exception() is not None]
    for task in failed:
        log.error("service %s failed: %r", task.get_name(), task.exception())
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    stopper.cancel()
    if failed:
        raise failed[0].exception()  # type: ignore[misc]


def _metrics():  # type: ignore[no-untyped-def]
    """`run` sets prometheus's multiprocess directory before any metric exists: import them late."""
    from infra import metrics

    return metrics


async def _supervised(settings: Settings, specs: list[ServiceSpec], *, stop: asyncio.Event,
                      grace: float = 30.0) -> None:
    """Keep every service running until ``stop``; then give them ``grace`` seconds to finish."""
    supervisor = Supervisor(settings)
    watched = [_watch_embedded_servers(settings, _running_endpoints, stop=stop)] if _running_endpoints else []
    running = asyncio.gather(*(supervisor.keep_running(spec, stop=stop) for spec in specs), *watched)
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait([running, stopper], return_when=asyncio.FIRST_COMPLETED)
        done, _ = await asyncio.wait([running], timeout=grace)
        if not done:
            log.error("services still running %.0f s after the stop: %s", grace,
                      ", ".join(s.name for s in SUPERVISION.services.values() if s.state != "stopped"))
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        else:
            running.result()  # a failure of the supervisor itself is not swallowed
    finally:
        stopper.cancel()
        await supervisor.close()


class OperatorAlerts:
    """Publishes operator alerts; a broker that cannot take one is logged, never fatal."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: Any = None

    async def raise_alert(self, alert: OperatorAlertRaised, *, account_id: str) -> None:
        envelope = observed(alert, account_id=account_id, occurred_at=utcnow())
        log.log(logging.ERROR if alert.severity == "critical" else logging.WARNING, "operator alert: %s",
                alert.message)
        try:
            if self._producer is None:
                assert self.settings.kafka_bootstrap_servers
                self._producer = make_producer(self.settings.kafka_bootstrap_servers)
                await asyncio.wait_for(self._producer.start(), 10)
            await asyncio.wait_for(publish_many(self._producer, OPERATOR_ALERTS, self.settings.topic_prefix,
                                                [envelope]), 10)
        except Exception as error:
            log.error("could not publish the operator alert (%r); it is in this log only", error)
            await self.close()

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()


class Supervisor:
    """Keeps each service running: restart with backoff after a crash, count it, alert on a crash loop."""

    def __init__(self, settings: Settings, *, supervision: Supervision = SUPERVISION,
                 alerts: OperatorAlerts | None = None) -> None:
        self.settings = settings
        self.policy = settings.supervisor
        self.supervision = supervision
        self.alerts = alerts or OperatorAlerts(settings)

    async def keep_running(self, spec: ServiceSpec, *, stop: asyncio.Event) -> None:
        status = self.supervision.status(spec.name)
        while not stop.is_set():
            error = await self._run_once(spec, status, stop)
            if stop.is_set():
                break
            await self._crashed(spec.name, status, error)
            status.state = "restarting"
            delay = restart_delay(status.consecutive_crashes, initial=self.policy.backoff_initial_seconds,
                                  maximum=self.policy.backoff_max_seconds)
            log.warning("restarting %s in %.1f s (restart %d)", spec.name, delay, status.restarts)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        status.state = "stopped"
        _metrics().service_up.labels(spec.name).set(0)

    async def _run_once(self, spec: ServiceSpec, status: ServiceStatus, stop: asyncio.Event) -> BaseException | None:
        """Run the service until it returns or fails; clear a crash loop once it has been up long enough."""
        status.state, status.started_at = "running", time.time()
        _metrics().service_up.labels(spec.name).set(1)
        task = asyncio.create_task(self._serve(spec, stop), name=spec.name)
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=self.policy.stable_after_seconds)
            if not done and status.consecutive_crashes:
                status.consecutive_crashes = 0  # stable: the next crash restarts quickly again
                if status.crash_loop:
                    status.crash_loop = False
                    _metrics().service_crash_loop.labels(spec.name).set(0)
                    await self.alerts.raise_alert(OperatorAlertRaised(
                        kind="service_recovered", severity="warning", service=spec.name,
                        message=f"{spec.name} has run for {self.policy.stable_after_seconds:g} s since its last "
                                f"restart ({status.restarts} restarts in all)"), account_id=spec.name)
        _metrics().service_up.labels(spec.name).set(0)
        if task.cancelled():
            return asyncio.CancelledError()
        return task.exception()

    async def _serve(self, spec: ServiceSpec, stop: asyncio.Event) -> None:
        await spec.load()(self.settings, stop=stop)  # loading inside the task: an import error is a crash too

    async def _crashed(self, name: str, status: ServiceStatus, error: BaseException | None) -> None:
        now = time.monotonic()
        status.restarts += 1
        status.consecutive_crashes += 1
        status.crash_times.append(now)
        status.last_error = repr(error)[:500] if error is not None else "stopped on its own before the stop"
        _metrics().service_restarts_total.labels(name).inc()
        log.error("service %s stopped unexpectedly: %s", name, status.last_error,
                  exc_info=error if isinstance(error, Exception) else None)
        looping = in_crash_loop(status.crash_times, now, restarts=self.policy.crash_loop_restarts,
                                window=self.policy.crash_loop_window_seconds)
        if looping and not status.crash_loop:
            status.crash_loop = True
            _metrics().service_crash_loop.labels(name).set(1)
            await self.alerts.raise_alert(OperatorAlertRaised(
                kind="crash_loop", severity="critical", service=name,
                message=f"{name} crashed {self.policy.crash_loop_restarts} times within "
                        f"{self.policy.crash_loop_window_seconds:g} s; it keeps being restarted with backoff. "
                        f"Last error: {status.last_error}", details={"restarts": status.restarts}),
                account_id=name)

    async def close(self) -> None:
        await self.alerts.close()


#: The embedded servers of the running `reconguard run` (None: given servers, nothing to watch).
_running_endpoints: Endpoints | None = None


async def _watch_embedded_servers(settings: Settings, endpoints: Endpoints, *, stop: asyncio.Event) -> None:
    """Start an embedded server again whenever it dies (a kill -9 included): PostgreSQL on its data,
    the broker empty, its topics then restored from the event archive."""
    servers: list[tuple[str, Any]] = [(name, server) for name, server in
                                      (("postgres", endpoints.postgres), ("broker", endpoints.broker))
                                      if server is not None]
    for name, _ in servers:
        SUPERVISION.status(name).state = "running"
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.supervisor.watch_interval_seconds)
        for name, server in servers:
            if not stop.is_set() and not server.running():
                await _revive(name, server, settings)
    for name, _ in servers:
        SUPERVISION.status(name).state = "stopped"


async def _revive(name: str, server: Any, settings: Settings) -> None:
    status = SUPERVISION.status(name)
    status.state, status.last_error = "restarting", f"{name} died"
    try:
        await asyncio.to_thread(server.revive)
        if name == "broker":
            await prepare_topics(settings)
            await restore_history(settings)
    except Exception as error:  # noqa: BLE001 - try again at the next look
        log.error("could not start the embedded %s again: %s", name, error)
        return
    status.restarts += 1
    status.state = "running"
    _metrics().embedded_server_restarts_total.labels(name).inc()


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

