"""The demo platform started while PostgreSQL is down waits for it rather than exit, as the poller and
the executor do: a chaos round can take the database down between the start-up migration and the
platform's first upsert of its users."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import pytest

from infra.embedded import free_port
from infra.settings import Settings
from producers.demo.remote import serve
from tests.integration.producers.test_simulator_server import Simulator

pytestmark = pytest.mark.timeout(180)


def test_the_demo_platform_waits_for_a_database_that_is_down(tmp_path: Path, caplog):
    """Nothing listens on the database's port: every upsert of the users is refused. The platform logs
    that it waits, and returns only when told to stop."""
    simulator = Simulator(tmp_path / "world")
    simulator.start()
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/reconguard"
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", database_url=url)

    async def serve_then_stop() -> None:
        stop = asyncio.Event()
        serving = asyncio.create_task(serve(settings, stop=stop, simulator=f"127.0.0.1:{simulator.base_port}"))
        for _ in range(200):  # up to 20 s for the first refusal to be logged
            await asyncio.sleep(0.1)
            if serving.done() or "demo platform: database unavailable" in caplog.text:
                break
        assert not serving.done(), "the demo platform exited while the database was down"
        stop.set()
        await asyncio.wait_for(serving, 10)

    try:
        with caplog.at_level(logging.WARNING):
            asyncio.run(serve_then_stop())
    finally:
        simulator.kill(signal.SIGTERM)
    assert "demo platform: database unavailable" in caplog.text
