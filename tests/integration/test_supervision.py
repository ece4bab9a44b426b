"""`reconguard run`'s supervisor: a killed service comes back with backoff, its neighbours go on, and a
crash loop degrades health and alerts the operators, without ever stopping the guard."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psutil
import pytest

from infra.kafka import make_consumer
from infra.service import Supervision, in_crash_loop, restart_delay
from reconguard.runner import ServiceSpec, Supervisor
from schemas import decode
from schemas.topics import OPERATOR_ALERTS
from tests.support.supervised import PID_FILE, TICKS_FILE
from tests.support.waiting import eventually


@pytest.mark.parametrize(("crashes", "expected"), [
    pytest.param(1, 0.5, id="first restart after the initial wait"),
    pytest.param(3, 2.0, id="doubles per consecutive crash"),
    pytest.param(12, 30.0, id="never above the maximum"),
])
def test_restart_delay_backs_off(crashes, expected):
    assert restart_delay(crashes, initial=0.5, maximum=30.0) == expected


def test_a_crash_loop_is_so_many_crashes_within_the_window():
    assert in_crash_loop([0, 1, 2], 2.5, restarts=3, window=10)
    assert not in_crash_loop([0, 1, 2], 11.5, restarts=3, window=10), "old crashes leave the window"


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


async def test_a_killed_child_service_restarts_while_its_neighbour_goes_on(settings, tmp_path, monkeypatch):
    pid_file, ticks = tmp_path / "child.pid", tmp_path / "ticks"
    monkeypatch.setenv(PID_FILE, str(pid_file))
    monkeypatch.setenv(TICKS_FILE, str(ticks))
    fast = settings.model_copy(update={"supervisor": settings.supervisor.model_copy(update={
        "backoff_initial_seconds": 0.2, "crash_loop_restarts": 3, "crash_loop_window_seconds": 60.0})})
    supervision = Supervision()
    supervisor = Supervisor(fast, supervision=supervision)
    stop = asyncio.Event()
    specs = [ServiceSpec("child", "tests.support.supervised:child_service"),
             ServiceSpec("neighbour", "tests.support.supervised:ticking_service")]
    running = asyncio.gather(*(supervisor.keep_running(spec, stop=stop) for spec in specs))
    consumer = make_consumer(OPERATOR_ALERTS.name(settings.topic_prefix), bootstrap_servers=fast.kafka_bootstrap_servers,
                             group_id=None, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        pids = []
        for round_ in range(1, 4):
            pid = await eventually(lambda: asyncio.sleep(0, _read_int(pid_file)),
                                   until=lambda p: p and p not in pids, what=f"child #{round_} to start")
            pids.append(pid)
            ticks_before = _read_int(ticks)
            os.kill(pid, signal.SIGKILL)  # a real kill -9 of the service's process
            await eventually(lambda: asyncio.sleep(0, supervision.status("child").restarts),
                             until=lambda n, r=round_: n == r, what=f"restart #{round_} to be counted")
            await eventually(lambda: asyncio.sleep(0, _read_int(ticks)), until=lambda t, b=ticks_before: t > b + 2,
                             what="the neighbour to go on ticking")
        await eventually(lambda: asyncio.sleep(0, _read_int(pid_file)), until=lambda p: p not in pids,
                         what="the child to come back after three kills")
        child, neighbour = supervision.status("child"), supervision.status("neighbour")
        assert child.crash_loop and supervision.degraded() == ["child"]
        assert "child exited with code -9" in (child.last_error or "")
        assert neighbour.restarts == 0 and neighbour.state == "running"

        records = await consumer.getmany(timeout_ms=5000)
        alerts = [decode(OPERATOR_ALERTS, r.value) for rs in records.values() for r in rs]
        assert [(a.payload.kind, a.payload.service, a.account_id) for a in alerts] == [("crash_loop", "child", "child")]
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
        await supervisor.close()
        await consumer.stop()
    assert supervision.status("child").state == "stopped"
    assert not psutil.pid_exists(_read_int(pid_file)) or psutil.Process(_read_int(pid_file)).status() == "zombie"


async def test_a_service_that_cannot_even_load_is_restarted_and_never_stops_the_others(settings, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setenv(TICKS_FILE, str(tmp_path / "ticks"))
    fast = settings.model_copy(update={"supervisor": settings.supervisor.model_copy(update={
        "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.1})})
    supervision = Supervision()
    supervisor = Supervisor(fast, supervision=supervision)
    stop = asyncio.Event()
    specs = [ServiceSpec("broken", "tests.support.supervised:no_such_service"),
             ServiceSpec("neighbour", "tests.support.supervised:ticking_service")]
    running = asyncio.gather(*(supervisor.keep_running(spec, stop=stop) for spec in specs))
    try:
        await eventually(lambda: asyncio.sleep(0, supervision.status("broken").restarts), until=lambda n: n >= 3,
                         what="the broken service to be retried")
        assert "AttributeError" in (supervision.status("broken").last_error or "")
        assert supervision.status("neighbour").state == "running"
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
        await supervisor.close()
