"""Reading what the producers appended, and a small simulated broker to produce it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition

from infra.kafka import make_consumer
from infra.settings import Settings
from producers.accounts import AccountRef
from producers.mt5.gateway import SimulatorGateway
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal
from schemas import Envelope, decode
from schemas.topics import Topic
from tests.support.waiting import eventually


class LogReader:
    """Everything appended to one topic, read from the beginning and kept up to date on each ``read``."""

    def __init__(self, settings: Settings, topic: Topic) -> None:
        self.topic, self.name = topic, topic.name(settings.topic_prefix)
        assert settings.kafka_bootstrap_servers is not None
        self.consumer = make_consumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
        self.envelopes: list[Envelope[Any]] = []

    async def __aenter__(self) -> LogReader:
        await self.consumer.start()
        partitions = [TopicPartition(self.name, p) for p in sorted(self.consumer.partitions_for_topic(self.name)
                                                                    or await self._partitions())]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_beginning(*partitions)
        return self

    async def _partitions(self) -> set[int]:
        await self.consumer._client.force_metadata_update()  # noqa: SLF001 - first read of a fresh topic
        return self.consumer.partitions_for_topic(self.name) or set()

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def read(self) -> list[Envelope[Any]]:
        batches = await self.consumer.getmany(timeout_ms=100)
        for records in batches.values():
            self.envelopes.extend(decode(self.topic, r.value) for r in records)
        return self.envelopes

    async def wait_for(self, until: Callable[[list[Envelope[Any]]], bool], *, what: str,
                       timeout: float = 20.0) -> list[Envelope[Any]]:
        return await eventually(self.read, until=until, timeout=timeout, what=what)

    def of(self, account_id: str, event_type: str | None = None) -> list[Envelope[Any]]:
        return [e for e in self.envelopes if e.account_id == account_id
                and (event_type is None or e.event_type == event_type)]


def demo_accounts(broker: SimulatedBroker, user_ids: list[str], *, first_login: int = 5000,
                  currencies: tuple[str, ...] = ("USD", "GBP", "EUR")) -> list[tuple[AccountRef, SimulatorGateway]]:
    """One simulated account and one attached terminal per user."""
    accounts = []
    for i, user_id in enumerate(user_ids):
        login, currency = first_login + i, currencies[i % len(currencies)]
        broker.add_account(login, "secret", currency=currency)
        terminal = SimulatorGateway(SimulatedTerminal(broker, login=login, password="secret"))
        assert terminal.initialize(login=login, password="secret", server=broker.server), terminal.last_error()
        accounts.append((AccountRef(user_id, login, broker.server, currency), terminal))
    return accounts


async def insert_users(database_url: str, user_ids: list[str]) -> None:
    """The users the ledger's foreign key needs."""
    import asyncpg

    from infra.dburl import plain_url

    connection = await asyncpg.connect(plain_url(database_url))
    try:
        await connection.executemany("INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING",
                                     [(u,) for u in user_ids])
    finally:
        await connection.close()
