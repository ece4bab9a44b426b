"""Starting services: endpoints, migrations, topics, and running several services until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from infra.db import migrate
from infra.dburl import redacted
from infra.embedded import Endpoints, infrastructure
from infra.kafka import ensure_topics
from infra.service import Service
from infra.settings import Settings

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

    The embedded broker keeps its log in memory, so each run starts with an empty log; an embedded
    database then starts empty too, because its tables (and the progress recorded with them) are
    projections of that log: keeping them would make the projector skip the new log's first events.
    """
    with infrastructure(kafka_bootstrap_servers=settings.kafka_bootstrap_servers,
                        database_url=settings.database_url, data_dir=settings.data_dir,
                        tansu_bin=settings.tansu_bin, fresh=settings.embedded_broker) as endpoints:
        resolved = _with(settings, endpoints)
        path = _run_file(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds the database password
        with os.fdopen(descriptor, "w") as file:
            json.dump({"pid": os.getpid(), "kafka_bootstrap_servers": endpoints.kafka_bootstrap_servers,
                       "database_url": endpoints.database_url}, file)
        try:
            yield resolved
        finally:
            path.unlink(missing_ok=True)


def _with(settings: Settings, endpoints: Endpoints) -> Settings:
    return settings.model_copy(update={"kafka_bootstrap_servers": endpoints.kafka_bootstrap_servers,
                                       "database_url": endpoints.database_url})


async def prepare(settings: Settings) -> None:
    """Migrate the database and create the topics: idempotent, safe for every service to call."""
    assert settings.database_url and settings.kafka_bootstrap_servers
    log.info("database %s: alembic upgrade head", redacted(settings.database_url))
    await asyncio.to_thread(migrate, settings.database_url)
    await ensure_topics(settings.kafka_bootstrap_servers, settings.topic_prefix,
                        partitions=settings.topic_partitions)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    target: str  # "module:function"

    def load(self) -> Service:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


async def run_services(settings: Settings, specs: list[ServiceSpec], *, stop: asyncio.Event) -> None:
    """Run services until ``stop`` is set or one of them fails; then stop them all."""
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


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

