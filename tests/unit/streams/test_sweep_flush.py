"""A sweep that runs while a batch is under way leaves the state writes to that batch.

Mid-batch (the batch awaits a send, or hands the loop back), the states hold part of the batch:
written by the sweep, their changelog sends would not be among the batch's, and the batch's inputs
could be acked before the state that holds them is durable.
"""

from __future__ import annotations

from typing import Any

import pytest

from infra.settings import Settings
from streams.app import create_app


@pytest.fixture
def runtime(monkeypatch) -> Any:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", database_url=None)
    runtime = create_app(settings, name="sweep-flush-check").streams_runtime  # built, never started
    monkeypatch.setattr(runtime, "_ready", lambda: True)
    monkeypatch.setattr(runtime, "_active_partitions", lambda: None)
    runtime.flushed = []
    for processor in runtime.processors:
        async def flush(*, force: bool = False, name: str = processor.name) -> list[Any]:
            runtime.flushed.append(name)
            return []
        monkeypatch.setattr(processor.store, "flush", flush)
    return runtime


async def test_a_sweep_between_batches_flushes_the_states(runtime) -> None:
    await runtime.sweep()
    assert runtime.flushed == ["reconciliation", "drawdown", "market", "alerts"]


async def test_a_sweep_during_a_batch_does_not(runtime) -> None:
    async with runtime.busy:
        await runtime.sweep()
    assert runtime.flushed == []
