"""The poller started while PostgreSQL is down waits for it, as the executor does, rather than exit.

Found by a chaos round: the database went down between the start-up migration and the poller's read
of its accounts, and the poller exited (the harness counted a crash)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from infra.embedded import free_port
from infra.settings import Settings
from producers.poller.service import serve


def test_the_poller_waits_for_a_database_that_is_down_when_it_reads_its_accounts(caplog):
    """Nothing listens on the port: every read of the accounts is refused. The poller logs that it waits,
    and returns only when told to stop (it would have raised ConnectionRefusedError before)."""
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/reconguard"
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", database_url=url)

    async def serve_then_stop() -> None:
        stop = asyncio.Event()
        serving = asyncio.create_task(serve(settings, stop=stop))
        for _ in range(100):  # up to 10 s for the first refusal to be logged
            await asyncio.sleep(0.1)
            if "poller accounts: database unavailable" in caplog.text:
                break
        assert not serving.done(), "the poller exited while the database was down"
        stop.set()
        await asyncio.wait_for(serving, 10)

    with caplog.at_level(logging.WARNING):
        asyncio.run(serve_then_stop())
    assert "poller accounts: database unavailable" in caplog.text


def test_the_poller_without_a_database_url_says_so():
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", database_url=None)
    with pytest.raises(RuntimeError, match="DATABASE_URL"):
        asyncio.run(serve(settings, stop=asyncio.Event()))
