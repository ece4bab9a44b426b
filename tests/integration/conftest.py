"""Fixtures shared by the integration tests."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from infra.kafka import make_producer
from infra.settings import Settings
from tests.support.servers import REPO_ROOT, unique_name


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    assert settings.kafka_bootstrap_servers is not None
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
def server_data_dir() -> Iterator[Path]:
    """A data directory for embedded servers of a test's own, under the repository: not pytest's tmp,
    whose root other pytest sessions make 0700 again while PostgreSQL runs as another user (as root)."""
    path = REPO_ROOT / ".reconguard" / unique_name("own")
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
