"""Faust's aiokafka transport with a short fetch wait, and input records delivered in runs.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer; tansu holds a fetch for part of
that wait even while data flows, which puts up to a second and a half between a critical report
being appended and the guard seeing it. This transport sets the wait from the settings
(``consumer_fetch_max_wait_ms``), before the consumer starts its fetcher.

Faust's fetch loop turns every fetched record into a message, hands it to the conductor through
``wait_first(callback, suspend_flow.wait())`` (four futures and an ``asyncio.wait`` each), and
acks it one by one: at the worker's rates that plumbing cost more than the rules. Topics
registered in ``StreamsApp.direct_topics`` (the worker's raw-bytes inputs, read by one batch
task) skip all of it: each partition's share of a fetch is queued as one ``Run`` of aiokafka
records, after the same flow-control and producer-buffer waits the conductor makes, and acked
as one (``Run.ack``: the same bookkeeping as ``Consumer.ack``, so Faust's commit logic, gaps
included, decides the committed offsets). Other topics (the tables' changelogs) take Faust's
path, message by message, unchanged.

Table recovery reads each changelog to its end as fetch responses report it: Faust asks
ListOffsets, whose answer tansu can give short by whole batches (``_Consumer.highwaters``).

What Faust's loop guaranteed still holds. A suspended flow (a rebalance) delivers nothing and
clears the queue; a run fetched in an older consumer generation is never acked, so its records
are fetched again from the committed offset (at least once; outputs have derived ids). Records
before the partition's read offset (a duplicate after a seek) are dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from itertools import pairwise
from typing import Any, ClassVar

import faust
from aiokafka import TopicPartition
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from faust.types.tuples import ack_lock
from mode import ServiceT
from mode.utils.futures import notify

from reconguard.kafka import fetched_end_offsets

Deliver = Callable[[TP, Sequence[Any]], Awaitable[None]]


class Run:
    """One partition's consecutive records from one fetch, acked together once processed."""

    __slots__ = ("consumer", "generation", "records", "tp")

    def __init__(self, tp: TP, records: Sequence[Any], consumer: Any, generation: int) -> None:
        self.tp, self.records, self.consumer, self.generation = tp, records, consumer, generation

    def __len__(self) -> int:
        return len(self.records)

    def ack(self) -> int:
        """Mark the records processed, for the next commit; return how many were newly acked.

        A run from before a rebalance is not acked: its partition may have moved, and its
        records will be read again from the committed offset."""
        consumer = self.consumer
        if consumer.app.consumer_generation_id != self.generation:
            return 0
        tp = self.tp
        with ack_lock:
            committed = consumer._committed_offset[tp]
            index = consumer._acked_index[tp]
            offsets = [r.offset for r in self.records
                       if (committed is None or r.offset >= committed) and r.offset not in index]
            index.update(offsets)
            consumer._acked[tp].extend(offsets)
            consumer._n_acked += len(offsets)
            notify(consumer._waiting_for_ack)
        return len(offsets)


def direct_delivery(app: faust.App, queue: Any) -> Deliver:
    """The fetch loop's handler for one raw-bytes channel: queue each partition's records as a Run.

    The conductor's steps for a message, once per run: wait for flow control (held during a
    rebalance) and for the producer buffer to ebb, and put the run on the channel's flow-control
    queue (which pauses the partition when full, and is cleared on a rebalance). The app's
    consumer and producer are looked up at the first run (they exist by then)."""
    bound: list[Deliver] = []

    async def deliver(tp: TP, records: Sequence[Any]) -> None:
        if not bound:
            bound.append(_bind(app, queue))
        await bound[0](tp, records)

    return deliver


def _bind(app: faust.App, queue: Any) -> Deliver:
    consumer = app.consumer
    acquire_flow_control, wait_until_producer_ebb = app.flow_control.acquire, app.producer.buffer.wait_until_ebb
    on_topic_buffer_full = app.sensors.on_topic_buffer_full
    pressure: dict[TP, tuple[Callable[[], None], Callable[[], None]]] = {}

    def callbacks(tp: TP) -> tuple[Callable[[], None], Callable[[], None]]:
        def high() -> None:
            on_topic_buffer_full(tp)
            consumer.on_buffer_full(tp)

        def drop() -> None:
            consumer.on_buffer_drop(tp)

        return pressure.setdefault(tp, (high, drop))

    async def deliver(tp: TP, records: Sequence[Any]) -> None:
        await acquire_flow_control()
        await wait_until_producer_ebb()
        run = Run(tp, records, consumer, app.consumer_generation_id)
        if queue.full():
            on_topic_buffer_full(tp)
            await queue.put(run)
            return
        high, drop = pressure.get(tp) or callbacks(tp)
        queue.put_nowait_enhanced(run, on_pressure_high=high, on_pressure_drop=drop)

    return deliver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.consumer.app.fetch_max_wait_ms  # read when the fetcher starts
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """The partitions' ends, for table recovery: as fetch responses report them.

        Faust asks ListOffsets, whose answer tansu can give short by whole batches; a recovery
        that stops there restores a table without its last updates (a peak equity, a pending
        liquidation), silently."""
        listed = await super().highwaters(*partitions)
        fetched = await fetched_end_offsets(self.app.bootstrap_servers,  # type: ignore[attr-defined]
                                            [TopicPartition(tp.topic, tp.partition) for tp in partitions])
        return {tp: max(listed.get(tp) or 0, fetched.get(TopicPartition(tp.topic, tp.partition), 0))
                for tp in partitions}

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover - the worker's loop
        """Faust's loop (faust/transport/consumer.py), a partition's records at a time."""
        consumer_stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set  # type: ignore[attr-defined]
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(timeout=1.0)
                await asyncio.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    await self._seek_after_stopped_flow()
                    continue
                await self._deliver_fetched(records, active)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _seek_after_stopped_flow(self) -> None:
        """As Faust's ``getmany``: records fetched while the flow stopped are dropped, and read again."""
        try:
            await self.perform_seek()
        except Exception as error:  # noqa: BLE001 - as Faust: the next fetch retries
            self.log.warning(f"exception performing seek when flow not active {error}")

    async def _deliver_fetched(self, records: dict[TP, list[Any]], active: set[TP] | None) -> None:
        direct, generation = self.app.direct_topics, self.app.consumer_generation_id  # type: ignore[attr-defined]
        for tp, fetched in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation:
                break  # a rebalance began: what is left is fetched again
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            deliver = direct.get(tp.topic)
            if deliver is None:
                await self._deliver_each(tp, fetched)
            else:
                await self._deliver_run(tp, fetched, deliver)

    async def _deliver_run(self, tp: TP, fetched: list[Any], deliver: Deliver) -> None:
        last = self._read_offset[tp]
        if last is not None and fetched[0].offset < last:
            fetched = [record for record in fetched if record.offset >= last]
            if not fetched:
                return
        await self._note_gaps(tp, last, fetched)
        await self._commit_if_due()
        if not self.suspend_flow.is_set():
            await deliver(tp, fetched)
        self._read_offset[tp] = fetched[-1].offset

    async def _note_gaps(self, tp: TP, last: int | None, fetched: list[Any]) -> None:
        """Offsets the log skipped (compaction, markers) count as acked, as in Faust's loop."""
        if not self.app.topics.acks_enabled_for(tp.topic):
            return
        first, end = fetched[0].offset, fetched[-1].offset
        if last and first - last > 1:
            await self._add_gap(tp, last + 1, first)
        if end - first + 1 == len(fetched):
            return  # consecutive, as almost always
        for before, after in pairwise(fetched):
            if after.offset - before.offset > 1:
                await self._add_gap(tp, before.offset + 1, after.offset)

    async def _deliver_each(self, tp: TP, fetched: list[Any]) -> None:
        """Faust's per-message path, for the topics the conductor serves (the changelogs)."""
        read_offset, to_message = self._read_offset, self._to_message
        for since_yield, record in enumerate(fetched, 1):
            if since_yield % 100 == 0:  # let timers and heartbeats run during long fetches
                await asyncio.sleep(0)
            offset, last = record.offset, read_offset[tp]
            if last is not None and offset < last:
                continue  # already read (a duplicate after a seek)
            if last and offset - last > 1 and self.app.topics.acks_enabled_for(tp.topic):
                await self._add_gap(tp, last + 1, offset)
            await self._commit_if_due()
            if not self.suspend_flow.is_set():
                await self.callback(to_message(tp, record))
            read_offset[tp] = offset

    async def _commit_if_due(self) -> None:
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()


class _Transport(driver.Transport):
    Consumer: ClassVar[type] = _Consumer


class StreamsApp(faust.App):
    """A Faust app whose consumer waits at most ``fetch_max_wait_ms`` for a fetch, and hands the
    records of its ``direct_topics`` over in runs."""

    fetch_max_wait_ms: int = 50
    bootstrap_servers: str = ""  # host:port,... for the recovery's end offsets (see _Consumer.highwaters)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: topic name -> handler of a partition's fetched records (``direct_delivery``), bypassing the conductor.
        self.direct_topics: dict[str, Deliver] = {}

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
