"""The whole pipeline in one test process: simulated terminals, poller, streams worker, executor,
projector, Postgres. The worker runs as a child process, exactly as ``reconguard run`` runs it.

``Pipeline.start`` brings the worker and the projector up first and waits until a probe account's
sync error has gone all the way to ``reconciliation_logs``; only then does the demo (market,
platform script, poller, executor) start, so the story's clock begins with a working pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from infra.dburl import plain_url
from infra.kafka import make_consumer, make_producer, publish
from infra.settings import Settings
from producers.demo import service as demo
from producers.demo.accounts import upsert_users
from producers.demo.script import Step
from producers.mt5.simulator import SimulatedBroker
from producers.poller.parsing import sync_failed
from projections import projector
from schemas import Envelope, decode, observed, utcnow
from schemas.topics import ACCOUNT_REPORTS, Topic
from streams import worker
from tests.support.waiting import eventually

PROBE = "e2e-probe"  # an account no terminal has: its sync errors prove the pipeline is working
Record = asyncpg.Record


class Pipeline:
    def __init__(self, settings: Settings, *, broker: SimulatedBroker, steps: list[Step]) -> None:
        assert settings.database_url is not None and settings.kafka_bootstrap_servers is not None
        self.settings, self.broker, self.steps = demo.demo_settings(settings), broker, steps
        self.stop_event = asyncio.Event()
        self.services: dict[str, asyncio.Task[None]] = {}
        self.db: asyncpg.Pool | None = None

    async def start(self) -> None:
        self.db = await asyncpg.create_pool(plain_url(self.settings.database_url), min_size=1, max_size=2)
        # Users first: the worker reads each account's guard levels from them when it starts.
        await upsert_users(self.settings.database_url, server=self.broker.server)
        await self.db.execute(
            "INSERT INTO users (id, display_name) VALUES ($1, $1) ON CONFLICT DO NOTHING", PROBE
        )
        self._run("worker", worker.serve(self.settings, stop=self.stop_event))
        self._run("projector", projector.serve(self.settings, stop=self.stop_event))
        await self._until_a_sync_error_reaches_postgres()
        self._run(
            "demo", demo.serve(self.settings, stop=self.stop_event, broker=self.broker, steps=self.steps)
        )

    async def stop(self) -> None:
        self.stop_event.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*self.services.values(), return_exceptions=True), timeout=40
            )
        if self.db is not None:
            await self.db.close()

    def _run(self, name: str, service: Awaitable[None]) -> None:
        self.services[name] = asyncio.create_task(service, name=name)  # type: ignore[arg-type]

    def check(self) -> None:
        """Fail at once, with the cause, if a service died (rather than time out waiting for its rows)."""
        for name, task in self.services.items():
            if task.done():
                error = task.exception() if not task.cancelled() else None
                raise AssertionError(f"the {name} service stopped early: {error!r}")

    async def _until_a_sync_error_reaches_postgres(self) -> None:
        producer = make_producer(self.settings.kafka_bootstrap_servers)
        await producer.start()

        async def poke() -> list[Record]:
            failure = sync_failed(
                user_id=PROBE,
                login=1,
                poll_seq=0,
                stage="terminal_info",
                error_code=-10004,
                error_message="probe: is the pipeline up?",
            )
            await publish(
                producer,
                ACCOUNT_REPORTS,
                self.settings.topic_prefix,
                observed(failure, account_id=PROBE, occurred_at=utcnow()),
            )
            return await self.rows("SELECT id FROM reconciliation_logs WHERE user_id = $1", PROBE)

        try:
            await self.wait_for(
                poke, what="a probe sync error to reach reconciliation_logs", timeout=90, interval=1.0
            )
        finally:
            await producer.stop()

    # --- reading the results ------------------------------------------------------------------------

    async def rows(self, sql: str, *args: Any) -> list[Record]:
        assert self.db is not None
        return await self.db.fetch(sql, *args)

    async def wait_for(
        self,
        probe: Callable[[], Awaitable[Any]],
        *,
        what: str,
        until: Callable[[Any], bool] = bool,
        timeout: float = 90.0,
        interval: float = 0.25,
    ) -> Any:
        async def checked() -> Any:
            self.check()
            return await probe()

        return await eventually(checked, until=until, timeout=timeout, interval=interval, what=what)

    async def wait_for_rows(
        self, sql: str, *args: Any, what: str, count: int = 1, timeout: float = 90.0
    ) -> list[Record]:
        return await self.wait_for(
            lambda: self.rows(sql, *args), until=lambda found: len(found) >= count, what=what, timeout=timeout
        )

    async def open_tickets(self, login: int) -> list[int]:
        """The account's open tickets as the trade server holds them (not what any terminal shows)."""
        with self.broker.lock:
            return sorted(self.broker.account(login).positions)

    async def whole_topic(self, topic: Topic) -> list[Envelope[Any]]:
        """Everything appended to ``topic`` so far, read up to each partition's high-water mark."""
        name = topic.name(self.settings.topic_prefix)
        consumer = make_consumer(bootstrap_servers=self.settings.kafka_bootstrap_servers, group_id=None)
        await consumer.start()
        try:
            partitions = [TopicPartition(name, p) for p in sorted(await _partitions(consumer, name))]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            seen: list[Envelope[Any]] = []

            async def read() -> Sequence[TopicPartition]:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    seen.extend(decode(topic, r.value) for r in records)
                return [
                    tp
                    for tp in partitions
                    if consumer.highwater(tp) is None or await consumer.position(tp) < consumer.highwater(tp)
                ]

            await eventually(read, until=lambda behind: not behind, timeout=30, what=f"the end of {name}")
            return seen
        finally:
            await consumer.stop()


async def _partitions(consumer: Any, name: str) -> set[int]:
    known = consumer.partitions_for_topic(name)
    if not known:
        await consumer._client.force_metadata_update()  # a topic not yet in the metadata
        known = consumer.partitions_for_topic(name)
    return known or set()
