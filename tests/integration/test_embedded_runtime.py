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

from infra.embedded import wait_until


def _servers_of(process: psutil.Process) -> list[psutil.Process]:
    return [c for c in process.children(recursive=True)
            if "tansu" in " ".join(c.cmdline()) or c.name() == "postgres"]


def _start_run(data_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    """`reconguard run` with its output in data_dir/run.log (a pipe nobody reads would fill and block it)."""
    variables = {k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}}
    variables |= {"RECONGUARD_DATA_DIR": str(data_dir), "RECONGUARD_HTTP_PORT": "0", "COLUMNS": "400", **env}
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "run.log").open("wb") as output:
        return subprocess.Popen([sys.executable, "-m", "reconguard", "run"], env=variables,
                                stdout=output, stderr=subprocess.STDOUT)


def _output(data_dir: Path) -> str:
    return (data_dir / "run.log").read_text(errors="replace")


@pytest.mark.parametrize(
    ("sig", "clean_exit"),
    [
        pytest.param(signal.SIGINT, True, id="Ctrl-C: services stop, then the servers"),
        pytest.param(signal.SIGTERM, True, id="SIGTERM: the same orderly shutdown"),
        pytest.param(signal.SIGKILL, False, id="the parent dies: the kernel stops its servers"),
    ],
)
def test_no_server_outlives_reconguard_run(server_data_dir, sig, clean_exit):
    tmp_path = server_data_dir  # postgres runs as another user: not pytest's tmp (see the fixture)
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
            assert code == 0, _output(tmp_path / "data")[-3000:]
            assert not (tmp_path / "data" / "run.json").exists(), "a stopped run forgets its endpoints"
    finally:
        if run.poll() is None:
            run.kill()


def test_given_servers_are_used_and_nothing_is_started(tmp_path, servers):
    import asyncio

    from tests.support.servers import create_database, drop_database, unique_name

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

    from infra.dburl import plain_url

    connection = await asyncpg.connect(plain_url(url))
    try:
        return bool(await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table))
    finally:
        await connection.close()


def test_run_serves_the_api_metrics_and_a_live_dashboard(tmp_path):
    """What `make run` promises on http://127.0.0.1:PORT: health, OpenAPI, /metrics that include the
    Faust worker's metrics (a child process) beside the poller's, and a dashboard whose charts show
    the running pipeline's accounts (opened in headless Chromium, screenshot in test-artifacts/)."""
    import re

    import httpx

    from infra.embedded import free_port
    from tests.support.browser import ARTIFACTS, CHROMIUM, chromium, series

    port = free_port()
    token = "scraper-" + "s" * 32  # /metrics answers only the metrics token (or an admin)
    run = _start_run(tmp_path / "data", RECONGUARD_HTTP_PORT=str(port), RECONGUARD_API_METRICS_TOKEN=token,
                     RECONGUARD_API_METRICS_PER_ACCOUNT="true")
    base = f"http://127.0.0.1:{port}"
    scrape = {"Authorization": f"Bearer {token}"}

    def metrics_of_worker_and_poller() -> bool:
        try:
            text = httpx.get(f"{base}/metrics", headers=scrape, timeout=2).text
        except httpx.HTTPError:
            return False
        return 'account_equity_gbp{account="u-alice"}' in text and 'mt5_position_sync_total{outcome="ok"}' in text

    try:
        wait_until(metrics_of_worker_and_poller, timeout=90, interval=0.5,
                   what="/metrics with the worker's and the poller's metrics")
        wait_until(lambda: 'consumer_lag_messages{consumer="projector"' in httpx.get(
            f"{base}/metrics", headers=scrape).text, timeout=30, what="the projector's lag")
        text = httpx.get(f"{base}/metrics", headers=scrape, timeout=5).text
        assert "mt5_poller_last_round_timestamp_seconds " in text
        assert 'mt5_last_sync_timestamp_seconds{account="u-bob"}' in text
        assert 'account_critical_distance_percent{account="u-carol"}' in text
        assert httpx.get(f"{base}/health", timeout=5).json()["status"] == "ok"
        assert "/users/{user_id}/logs" in httpx.get(f"{base}/openapi.json", timeout=5).json()["paths"]
        assert "<html" in httpx.get(f"{base}/dashboard", timeout=5).text.lower()
        dashboard = re.search(r"dashboard (http://\S+/dashboard#token=\S+)", _output(tmp_path / "data"))
        assert dashboard, "run prints the dashboard's address with a token"
        if CHROMIUM is None:
            pytest.skip("chromium is not installed (Debian package `chromium`): dashboard not opened")
        dom = chromium(dashboard.group(1), tmp_path / "profile", "--dump-dom")
        drawn = {account: points for account, points, _ in series(dom, "equity")}
        assert {"u-alice", "u-bob", "u-carol", "u-dave"} <= drawn.keys(), dom[:2000]
        assert all(points >= 1 for points in drawn.values())
        ARTIFACTS.mkdir(exist_ok=True)
        chromium(dashboard.group(1), tmp_path / "profile-shot", f"--screenshot={ARTIFACTS / 'dashboard-live.png'}")
    finally:
        run.send_signal(signal.SIGINT)
        assert run.wait(60) == 0


def test_an_embedded_run_keeps_the_database_of_the_last_one(server_data_dir):
    """Users, tokens, projections and the archive outlive a run (the topics come back from the archive),
    and each run's database asks for the password kept beside it, which only its owner can read."""
    import asyncio
    import stat

    import asyncpg

    from infra.dburl import plain_url
    from infra.settings import Settings
    from reconguard.runner import embedded_or_given, prepare

    settings = Settings(data_dir=server_data_dir, KAFKA_BOOTSTRAP_SERVERS=None, DATABASE_URL=None)
    assert settings.embedded_broker and settings.embedded_database

    async def users(url: str, *, add: str | None = None) -> list[str]:
        connection = await asyncpg.connect(plain_url(url))
        try:
            if add:
                await connection.execute("INSERT INTO users (id, role, display_name) VALUES ($1, 'trader', $1)", add)
            return [r["id"] for r in await connection.fetch("SELECT id FROM users ORDER BY id")]
        finally:
            await connection.close()

    for run, expected_before in enumerate(([], ["u-kept"])):
        with embedded_or_given(settings) as resolved:
            run_file = settings.data_dir / "run.json"
            assert stat.S_IMODE(run_file.stat().st_mode) == 0o600, "run.json names the database password"
            asyncio.run(prepare(resolved))
            assert asyncio.run(users(resolved.database_url)) == expected_before, f"run {run}"
            if run == 0:
                asyncio.run(users(resolved.database_url, add="u-kept"))
