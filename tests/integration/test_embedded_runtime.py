"""`reconguard run` owns its embedded servers: they stop with it, however it stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from reconguard.embedded import wait_until


def _servers_of(process: psutil.Process) -> list[psutil.Process]:
    return [c for c in process.children(recursive=True)
            if "tansu" in " ".join(c.cmdline()) or c.name() == "postgres"]


def _start_run(data_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    variables = {k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}}
    variables |= {"RECONGUARD_DATA_DIR": str(data_dir), "RECONGUARD_HTTP_PORT": "0", **env}
    return subprocess.Popen([sys.executable, "-m", "reconguard", "run"], env=variables,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize(
    ("sig", "clean_exit"),
    [
        pytest.param(signal.SIGINT, True, id="Ctrl-C: services stop, then the servers"),
        pytest.param(signal.SIGTERM, True, id="SIGTERM: the same orderly shutdown"),
        pytest.param(signal.SIGKILL, False, id="the parent dies: the kernel stops its servers"),
    ],
)
def test_no_server_outlives_reconguard_run(tmp_path, sig, clean_exit):
    run = _start_run(tmp_path / "data")
    parent = psutil.Process(run.pid)
    try:
        wait_until(lambda: (tmp_path / "data" / "run.json").exists() and len(_servers_of(parent)) >= 2,
                   timeout=60, what="the embedded broker and postgres")
        servers = _servers_of(parent)
        postmaster = next(s for s in servers if s.name() == "postgres")
        watched = [s for s in servers if s.name() != "postgres"] + [postmaster] + postmaster.children()
        run.send_signal(sig)
        code = run.wait(60)
        _, alive = psutil.wait_procs(watched, timeout=20)
        assert alive == [], f"left behind: {[p.cmdline() for p in alive]}"
        if clean_exit:
            assert code == 0, run.stderr.read().decode()[-2000:] if run.stderr else code
            assert not (tmp_path / "data" / "run.json").exists(), "a stopped run forgets its endpoints"
    finally:
        if run.poll() is None:
            run.kill()


def test_given_servers_are_used_and_nothing_is_started(tmp_path, servers):
    from tests.support.servers import create_database, drop_database, unique_name
    import asyncio

    name = unique_name("given")
    url = asyncio.run(create_database(servers.database_url, name))
    run = _start_run(tmp_path / "data", KAFKA_BOOTSTRAP_SERVERS=servers.kafka_bootstrap_servers, DATABASE_URL=url,
                     RECONGUARD_TOPIC_PREFIX=unique_name("given").replace("_", "-"))
    parent = psutil.Process(run.pid)
    try:
        wait_until(lambda: (tmp_path / "data" / "run.json").exists(), timeout=60, what="run.json")
        recorded = json.loads((tmp_path / "data" / "run.json").read_text())
        assert recorded["database_url"] == url
        assert recorded["kafka_bootstrap_servers"] == servers.kafka_bootstrap_servers
        assert _servers_of(parent) == []
        wait_until(lambda: asyncio.run(_has_table(url, "reconciliation_logs")), timeout=60,
                   what="the schema to be migrated on the given database")
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(60)
        asyncio.run(drop_database(servers.database_url, name))


async def _has_table(url: str, table: str) -> bool:
    import asyncpg

    from reconguard.dburl import plain_url

    connection = await asyncpg.connect(plain_url(url))
    try:
        return bool(await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table))
    finally:
        await connection.close()
