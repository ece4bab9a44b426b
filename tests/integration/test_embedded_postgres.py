"""The embedded PostgreSQL: a password nobody else can read, loopback only, and back after a kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from infra.dburl import plain_url
from infra.embedded import EmbeddedPostgres, wait_until
from infra.internals import postgres_bin_path


@pytest.fixture
def data_dir(server_data_dir: Path) -> Path:
    return server_data_dir


@pytest.fixture
def postgres(data_dir: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _query(url: str, sql: str) -> object:
    async def go() -> object:
        connection = await asyncpg.connect(plain_url(url), timeout=10)
        try:
            return await connection.fetchval(sql)
        finally:
            await connection.close()

    return asyncio.run(go())


def test_password_is_generated_into_a_file_only_its_owner_reads(postgres):
    mode = stat.S_IMODE(postgres.password_file.stat().st_mode)
    assert mode == 0o600, oct(mode)
    password = postgres.password_file.read_text().strip()
    assert len(password) >= 32
    assert f":{password}@" in postgres.url
    assert _query(postgres.url, "SELECT current_user") == "postgres"


def test_a_local_connection_without_the_password_is_refused(postgres):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    result = subprocess.run(
        [str(postgres_bin_path() / "psql"), "-X", "-w", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres",
         "-d", "postgres", "-c", "SELECT 1"], capture_output=True, text=True, env=env | {"HOME": "/nonexistent"},
        timeout=20)
    assert result.returncode != 0
    assert "password" in result.stderr, result.stderr

    async def wrong_password() -> None:
        await asyncpg.connect(host="127.0.0.1", port=postgres.port, user="postgres", password="guess",
                              database="postgres", timeout=10)

    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(wrong_password())


def test_it_listens_on_loopback_only_with_no_unix_socket(postgres):
    assert _query(postgres.url, "SHOW listen_addresses") == "127.0.0.1"
    assert _query(postgres.url, "SHOW unix_socket_directories") == ""
    hba = _query(postgres.url, "SELECT string_agg(DISTINCT auth_method, ',') FROM pg_hba_file_rules")
    assert hba == "scram-sha-256"


def test_it_starts_again_after_its_postmaster_is_killed_with_sigkill(postgres):
    asyncio.run(_execute(postgres.url, "CREATE TABLE kept (v int)", "INSERT INTO kept VALUES (42)"))
    postmaster = psutil.Process(postgres.pid)
    backends = postmaster.children()
    assert backends, "a running postmaster has its auxiliary processes"

    os.kill(postmaster.pid, signal.SIGKILL)
    wait_until(lambda: postmaster.status() == psutil.STATUS_ZOMBIE, timeout=20, what="the postmaster to die")
    assert (postgres.pgdata / "postmaster.pid").exists(), "kill -9 leaves its lock file behind"
    assert not postgres.running()  # reaps it: a zombie would keep postmaster.pid "in use"

    assert postgres.revive() is True
    assert not psutil.pid_exists(postmaster.pid) or postmaster.status() != psutil.STATUS_ZOMBIE
    assert all(not b.is_running() or b.status() == psutil.STATUS_ZOMBIE for b in backends)
    assert postgres.pid != postmaster.pid
    assert _query(postgres.url, "SELECT v FROM kept") == 42
    assert postgres.revive() is False, "a running server is left alone"


def test_a_stale_lock_file_from_a_dead_server_does_not_stop_a_start(data_dir):
    data = data_dir
    first = EmbeddedPostgres(data)
    first.start()
    pid = first.pid
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not first.running(), timeout=20, what="the postmaster to die")
    first._child.kill_leftovers()
    assert (first.pgdata / "postmaster.pid").exists()
    second = EmbeddedPostgres(data, port=first.port)
    try:
        second.start()
        assert _query(second.url, "SELECT 1") == 1
    finally:
        second.stop()


async def _execute(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(plain_url(url), timeout=10)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()
