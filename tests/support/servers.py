"""The broker and database the tests talk to: real ones, never mocks.

Order of choice: ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` if set; testcontainers when
``RECONGUARD_TEST_CONTAINERS=1`` and a Docker engine answers; otherwise the embedded tansu and
PostgreSQL, started once for the session and stopped at its end.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from infra.dburl import plain_url, with_database
from infra.embedded import Endpoints, infrastructure

REPO_ROOT = Path(__file__).resolve().parents[2]


def _docker_answers() -> bool:
    try:
        import docker  # shipped with testcontainers

        docker.from_env().ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no usable engine"
        return False


@contextlib.contextmanager
def _containers() -> Iterator[Endpoints]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with KafkaContainer() as kafka, PostgresContainer("postgres:16", driver=None) as postgres:
        yield Endpoints(kafka.get_bootstrap_server(), plain_url(postgres.get_connection_url()))


@contextlib.contextmanager
def test_servers() -> Iterator[Endpoints]:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("DATABASE_URL")
    if kafka is None and database is None and os.environ.get("RECONGUARD_TEST_CONTAINERS") == "1":
        if _docker_answers():
            with _containers() as endpoints:
                yield endpoints
            return
    data_dir = REPO_ROOT / ".reconguard" / f"test-{os.getpid()}"
    try:
        with infrastructure(kafka_bootstrap_servers=kafka, database_url=database, data_dir=data_dir,
                            fresh=True) as endpoints:
            yield endpoints
    finally:
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def _on_server(server_url: str, statement: str) -> None:
    """Run one statement that cannot run inside a database of its own (CREATE/DROP DATABASE)."""
    connection = await asyncpg.connect(plain_url(with_database(server_url, "postgres")))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def create_database(server_url: str, name: str) -> str:
    await _on_server(server_url, f'CREATE DATABASE "{name}"')
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    await _on_server(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
