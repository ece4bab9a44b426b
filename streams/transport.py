"""Faust's aiokafka transport with a short fetch wait.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer; tansu holds a fetch for part of
that wait even while data flows, which puts up to a second and a half between a critical report
being appended and the guard seeing it. This transport sets the wait from the settings
(``consumer_fetch_max_wait_ms``), before the consumer starts its fetcher.
"""

from __future__ import annotations

from typing import Any, ClassVar

import faust
from faust.transport.drivers import aiokafka as driver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.consumer.app.fetch_max_wait_ms  # read when the fetcher starts
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer: ClassVar[type] = _Consumer


class StreamsApp(faust.App):
    """A Faust app whose consumer waits at most ``fetch_max_wait_ms`` for a fetch."""

    fetch_max_wait_ms: int = 50

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
