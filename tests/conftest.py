"""Session fixtures: one real broker and one real PostgreSQL for the whole run.

Each test module gets its own topic prefix (its own topics) and its own migrated database, so
modules never see each other's data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from infra.db import migrate
from infra.embedded import Endpoints
from infra.kafka import ensure_topics
from infra.settings import Settings
from tests.support.servers import create_database, drop_database, test_servers, unique_name


@pytest.fixture(scope="session")
def servers() -> Iterator[Endpoints]:
    with test_servers() as endpoints:
        yield endpoints


@pytest.fixture(scope="module")
def topic_prefix(servers: Endpoints) -> str:
    prefix = unique_name("t").replace("_", "-")
    asyncio.run(ensure_topics(servers.kafka_bootstrap_servers, prefix, partitions=4))
    return prefix


@pytest.fixture(scope="module")
def database_url(servers: Endpoints) -> Iterator[str]:
    name = unique_name("test")
    url = asyncio.run(create_database(servers.database_url, name))
    migrate(url)
    yield url
    asyncio.run(drop_database(servers.database_url, name))


@pytest.fixture(scope="module")
def settings(servers: Endpoints, topic_prefix: str, database_url: str) -> Settings:
    """Settings pointing at this module's topics and database."""
    return Settings(KAFKA_BOOTSTRAP_SERVERS=servers.kafka_bootstrap_servers, DATABASE_URL=database_url,
                    topic_prefix=topic_prefix, topic_partitions=4)
