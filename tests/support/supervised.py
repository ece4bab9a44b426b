"""Services for the supervision tests: one that runs a real child process, one that ticks beside it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from infra.settings import Settings

#: Where the child service writes its child's pid, and the neighbour its ticks (set by the test).
PID_FILE = "RECONGUARD_TEST_CHILD_PID_FILE"
TICKS_FILE = "RECONGUARD_TEST_TICKS_FILE"


async def child_service(settings: Settings, *, stop: asyncio.Event) -> None:
    """Run a child process until ``stop``; fail when it dies (as the streams worker's service does)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(os.environ[PID_FILE]).write_text(str(child.pid))
    try:
        while not stop.is_set():
            if child.poll() is not None:
                raise RuntimeError(f"child exited with code {child.returncode}")
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except TimeoutError:
                pass
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait(10)


async def ticking_service(settings: Settings, *, stop: asyncio.Event) -> None:
    """Count up in a file while running: the neighbour that must go on."""
    ticks = Path(os.environ[TICKS_FILE])
    count = 0
    while not stop.is_set():
        count += 1
        ticks.write_text(str(count))
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except TimeoutError:
            pass
