"""The API's one producer, started on first use so the API comes up (and /health can say so)
even while the broker is down."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaProducer

from infra.kafka import make_producer, publish
from schemas import Envelope, Topic

log = logging.getLogger(__name__)


class BrokerLink:
    def __init__(self, *, bootstrap_servers: str, prefix: str, timeout: float) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._prefix = prefix
        self._timeout = timeout
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def producer(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = make_producer(
                    self._bootstrap_servers, request_timeout_ms=int(self._timeout * 1000)
                )
                try:
                    await asyncio.wait_for(producer.start(), self._timeout)
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def publish(self, topic: Topic, envelope: Envelope[Any]) -> None:
        producer = await self.producer()
        await asyncio.wait_for(publish(producer, topic, self._prefix, envelope), self._timeout)

    async def check(self) -> None:
        """A metadata request: answers only if a broker is up and talking."""
        producer = await self.producer()
        await asyncio.wait_for(producer.client.fetch_all_metadata(), self._timeout)

    async def close(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None
