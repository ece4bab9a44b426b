"""Faust's aiokafka transport with a short fetch wait, and a cheaper fetch loop.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer; tansu holds a fetch for part of
that wait even while data flows, which puts up to a second and a half between a critical report
being appended and the guard seeing it. This transport sets the wait from the settings
(``consumer_fetch_max_wait_ms``), before the consumer starts its fetcher.

Faust's fetch loop hands each message to the conductor through ``wait_first(callback,
suspend_flow.wait())``: four futures and an ``asyncio.wait`` per message, which cost the worker
more than its rules. Here the callback is awaited directly. The ``wait_first`` existed so that a
suspended flow (a rebalance) drops what is in flight: that still holds, as a revocation stops the
fetcher (cancelling the awaited callback) and messages fetched while the flow is suspended are
dropped as before; their offsets were never acked, so they are fetched again (at least once).

Topics registered in ``StreamsApp.direct_topics`` (the worker's raw-bytes inputs, read by one
batch task) skip the conductor: ``direct_delivery`` queues the message itself, with its ack, on
the reading channel's flow-control queue, without building a Faust Event per message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from mode import ServiceT


class Delivered:
    """What the direct path queues for a message: the message, and its ack (as ``Event.ack``)."""

    __slots__ = ("consumer", "message")

    def __init__(self, message: Any, consumer: Any) -> None:
        self.message, self.consumer = message, consumer

    def ack(self) -> bool:
        return bool(self.message.ack(self.consumer))


def direct_delivery(app: faust.App, queue: Any) -> Callable[[Any], Awaitable[None]]:
    """The conductor's per-message handler for one raw-bytes channel, without decoding an Event.

    The same steps as ``faust.transport.conductor`` for a topic read by one channel: wait for flow
    control (held during a rebalance) and for the producer buffer to ebb, take a reference for the
    reader, and put it on the channel's flow-control queue (which pauses the partition when full
    and is cleared on a rebalance). The reader uses ``message`` (raw key and value bytes) and
    ``ack()``, so the Event, its key/value decoding and the conductor's routing lock are skipped.
    The app's consumer and producer are looked up at the first message (they exist by then).
    """
    bound: list[Callable[[Any], Awaitable[None]]] = []

    async def deliver(message: Any) -> None:
        if not bound:
            bound.append(_bind(app, queue))
        await bound[0](message)

    return deliver


def _bind(app: faust.App, queue: Any) -> Callable[[Any], Awaitable[None]]:
    consumer = app.consumer
    acquire_flow_control, wait_until_producer_ebb = app.flow_control.acquire, app.producer.buffer.wait_until_ebb
    on_topic_buffer_full = app.sensors.on_topic_buffer_full
    pressure: dict[Any, tuple[Callable[[], None], Callable[[], None]]] = {}

    def callbacks(message: Any) -> tuple[Callable[[], None], Callable[[], None]]:
        tp = TP(message.topic, message.partition)  # Faust's TP, as the conductor passes (not aiokafka's)

        def high() -> None:
            on_topic_buffer_full(tp)
            consumer.on_buffer_full(tp)

        def drop() -> None:
            consumer.on_buffer_drop(tp)

        return pressure.setdefault(message.tp, (high, drop))

    async def deliver(message: Any) -> None:
        await acquire_flow_control()
        await wait_until_producer_ebb()
        message.incref(1)
        item = Delivered(message, consumer)
        if queue.full():
            on_topic_buffer_full(TP(message.topic, message.partition))
            await queue.put(item)
            return
        high, drop = pressure.get(message.tp) or callbacks(message)
        queue.put_nowait_enhanced(item, on_pressure_high=high, on_pressure_drop=drop)

    return deliver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.consumer.app.fetch_max_wait_ms  # read when the fetcher starts
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover - the worker's loop
        """Faust's loop (faust/transport/consumer.py) with the callback awaited directly."""
        callback, getmany, read_offset = self.callback, self.getmany, self._read_offset
        direct = self.app.direct_topics  # type: ignore[attr-defined]
        consumer_stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set  # type: ignore[attr-defined]
        suspended, acks_enabled_for = self.suspend_flow.is_set, self.app.topics.acks_enabled_for
        since_yield = 0
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                fetched = getmany(timeout=1.0)
                await asyncio.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in fetched:
                    since_yield += 1
                    if since_yield > 100:  # let timers and heartbeats run during long fetches
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset, last = message.offset, read_offset[tp]
                    if last is not None and offset < last:
                        continue  # already read (a duplicate after a seek)
                    if offset - (last or 0) > 1 and last and acks_enabled_for(message.topic):
                        await self._add_gap(tp, last + 1, offset)
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if not suspended():
                        deliver = direct.get(message.topic)
                        await (callback(message) if deliver is None else deliver(message))
                    read_offset[tp] = offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class _Transport(driver.Transport):
    Consumer: ClassVar[type] = _Consumer


class StreamsApp(faust.App):
    """A Faust app whose consumer waits at most ``fetch_max_wait_ms`` for a fetch."""

    fetch_max_wait_ms: int = 50

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: topic name -> direct per-message handler (``direct_delivery``), bypassing the conductor.
        self.direct_topics: dict[str, Callable[[Any], Awaitable[None]]] = {}

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
