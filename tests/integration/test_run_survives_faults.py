"""`reconguard run` under real faults: the Faust worker and the PostgreSQL postmaster killed with SIGKILL
come back while everything else goes on (and /health says so); stopped with Ctrl-C and started again,
the run keeps yesterday's rows and replays them from the archive."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from infra.dburl import plain_url
from infra.embedded import free_port, wait_until

pytestmark = pytest.mark.timeout(600)
METRICS_TOKEN = "faults-" + "m" * 32  # where /metrics asks for a token


@pytest.fixture
def data_dir(server_data_dir: Path) -> Path:
    return server_data_dir


def _environment(data_dir: Path) -> dict[str, str]:
    variables = {k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}}
    return variables | {"RECONGUARD_DATA_DIR": str(data_dir)}


def _start(data_dir: Path, port: int, log_name: str) -> subprocess.Popen[bytes]:
    variables = _environment(data_dir) | {"RECONGUARD_HTTP_PORT": str(port), "COLUMNS": "300",
                                          "RECONGUARD_SUPERVISOR_BACKOFF_INITIAL_SECONDS": "0.2",
                                          "RECONGUARD_API_METRICS_TOKEN": METRICS_TOKEN}
    with (data_dir / log_name).open("wb") as output:
        return subprocess.Popen([sys.executable, "-m", "reconguard", "run"], env=variables, stdout=output,
                                stderr=subprocess.STDOUT)


def _health(port: int) -> dict:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return {}


def _children(run: subprocess.Popen[bytes], match) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(run.pid).children(recursive=True):
        try:
            if match(child):
                found.append(child)
        except psutil.Error:
            pass
    return found


def _is_worker(process: psutil.Process) -> bool:
    return process.cmdline()[1:3] == ["-m", "streams"] and process.status() != psutil.STATUS_ZOMBIE


def _is_postmaster(run_pid: int):
    return lambda p: p.name() == "postgres" and p.ppid() == run_pid and p.status() != psutil.STATUS_ZOMBIE


def _count(url: str, sql: str) -> int:
    async def go() -> int:
        connection = await asyncpg.connect(plain_url(url), timeout=5)
        try:
            return await connection.fetchval(sql)
        finally:
            await connection.close()

    try:
        return asyncio.run(go())
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return -1


def _stop(run: subprocess.Popen[bytes], data_dir: Path, log_name: str) -> None:
    run.send_signal(signal.SIGINT)
    code = run.wait(90)
    assert code == 0, (data_dir / log_name).read_text(errors="replace")[-4000:]


def test_killed_worker_and_database_come_back_and_a_second_run_keeps_and_replays_the_first(data_dir):
    port = free_port()
    run = _start(data_dir, port, "run-1.log")
    try:
        wait_until(lambda: _health(port).get("status") == "ok", timeout=120, interval=0.5, what="a healthy run")
        url = json.loads((data_dir / "run.json").read_text())["database_url"]
        wait_until(lambda: _count(url, "SELECT count(*) FROM position_snapshots") > 0, timeout=90, interval=0.5,
                   what="the first snapshots")

        (worker,) = _children(run, _is_worker)
        worker.send_signal(signal.SIGKILL)
        wait_until(lambda: _health(port).get("services", {}).get("worker", {}).get("restarts") == 1
                   and _children(run, _is_worker), timeout=60, interval=0.3, what="the worker to be restarted")
        assert _children(run, _is_worker)[0].pid != worker.pid
        assert _health(port)["services"]["api"]["restarts"] == 0, "the neighbours went on"

        (postmaster,) = _children(run, _is_postmaster(run.pid))
        postmaster.send_signal(signal.SIGKILL)
        wait_until(lambda: _health(port).get("services", {}).get("postgres", {}).get("restarts") == 1,
                   timeout=90, interval=0.3, what="the embedded postgres to be started again")
        wait_until(lambda: _health(port).get("status") == "ok", timeout=60, interval=0.5,
                   what="health to be ok again")
        before = _count(url, "SELECT count(*) FROM position_snapshots")
        wait_until(lambda: _count(url, "SELECT count(*) FROM position_snapshots") > before, timeout=60,
                   interval=0.5, what="snapshots to flow again after the database came back")
        assert run.poll() is None, "no fault stopped the run"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5,
                            headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
        assert 'service_restarts_total{service="worker"} 1.0' in metrics
    finally:
        _stop(run, data_dir, "run-1.log")

    # Everything the first run wrote is still there after Ctrl-C, and its history replays from the archive.
    run = _start(data_dir, port, "run-2.log")
    try:
        wait_until(lambda: _health(port).get("status") == "ok", timeout=120, interval=0.5, what="the second run")
        url = json.loads((data_dir / "run.json").read_text())["database_url"]
        kept = _count(url, "SELECT count(*) FROM position_snapshots")
        assert kept > 0 and _count(url, "SELECT count(*) FROM users WHERE id = 'u-alice'") == 1
        assert _count(url, "SELECT count(*) FROM api_tokens") >= 2, "the first run's token is still there"
        archived = _count(url, "SELECT count(*) FROM event_archive WHERE topic = 'reconguard.drawdown-state.v1'")
        assert archived >= kept
        replay = subprocess.run([sys.executable, "-m", "reconguard", "replay", "--source", "archive",
                                 "--schema", "yesterday"], capture_output=True, text=True, timeout=300,
                                env=_environment(data_dir) | {"COLUMNS": "200"})
        assert replay.returncode == 0, replay.stdout + replay.stderr
        replayed = _count(url, "SELECT count(*) FROM yesterday.position_snapshots")
        assert replayed >= kept, (replayed, kept, replay.stdout)
        assert "history restored from the archive" in (data_dir / "run-2.log").read_text(errors="replace")
    finally:
        _stop(run, data_dir, "run-2.log")
