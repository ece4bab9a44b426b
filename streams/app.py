"""The Faust app: one thin batch task over the account topics, three state tables, a deadline sweep.

The task takes events in batches straight from the topic's queue, where the fetch loop puts
each partition's fetched records as one run (``infra/internals.py``, ``streams/batching.py``:
no per-event stream machinery), decodes each once with ``schemas.codec`` (bad ones go to the
dead-letter topic with the reason), hands it to every processor that reads its type, publishes
what the rules decided, writes the state tables once per batch, only for accounts whose state
changed, and acks the batch once its outputs and changelog records are acknowledged. Topics
carry raw bytes; keys are account ids, so an account's reports, trades, commands and results
share a partition number, and its rows in the three tables (co-partitioned with the topics) live
on the worker that reads them.

A sweep fires pending liquidations whose grace has run out (the deadline is in the drawdown
table, so it survives a restart) and flushes volatile state; it runs every
``sweep_interval_seconds``, or at the next deadline when that comes sooner. Output ids are
derived from their cause, so a repeat after a crash or a restart is recognised downstream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import faust

from infra import metrics
from infra.internals import Run, StreamsApp, TableManager, assigned_partitions, direct_delivery, settled
from infra.kafka import dead_letter
from infra.service import tune_garbage_collector
from infra.settings import Settings
from schemas import DecodeError, Envelope, decode, derived, encode, encode_key, utcnow
from schemas.commands import ClosePosition
from schemas.decisions import (
    AccountAssessed,
    ActionTaken,
    AlertType,
    DivergenceDetected,
    DivergenceResolved,
    GuardAlertRaised,
)
from schemas.locks import UnlockAccount
from schemas.operations import OperatorAlertRaised
from schemas.platform import TradeApproved, TradeClosedByPlatform
from schemas.reports import AccountReport, AccountSyncFailed, PositionReport, TickReport
from schemas.results import (
    PositionClosed,
    PositionCloseDeferred,
    PositionCloseFailed,
    PositionCloseSuperseded,
)
from schemas.topics import (
    ACCOUNT_REPORTS,
    CLOSE_COMMANDS,
    CLOSE_RESULTS,
    DEAD_LETTERS,
    EXPECTED_TRADES,
    LOCK_COMMANDS,
    OPERATOR_ALERTS,
    POSITION_REPORTS,
    TICKS,
    Topic,
    written_by,
)
from streams.alerts import lifecycle
from streams.alerts.state import AlertsState
from streams.batching import Pacer, batches
from streams.decisions import Decision, replace
from streams.drawdown import liquidation
from streams.drawdown import rules as drawdown
from streams.drawdown.state import DrawdownState
from streams.levels import AccountLevelsBook
from streams.market import rules as market
from streams.reconciliation import rules as reconciliation
from streams.reconciliation.state import ReconciliationState
from streams.store import StateStore

log = logging.getLogger(__name__)

CONSUMER = "streams"
RUNS_BUFFERED = 256
#: A batch hands the loop back after this much work (the sweep, the producer's sender and the
#: offset commit run between its events; see ``streams.batching.Pacer``).
YIELD_AFTER_SECONDS = 0.005
INPUTS = (ACCOUNT_REPORTS, POSITION_REPORTS, TICKS, EXPECTED_TRADES, CLOSE_COMMANDS, CLOSE_RESULTS, LOCK_COMMANDS)


@dataclass
class Processor:
    """One rule set: the payload types it reads, its state and its step function."""

    name: str
    reads: tuple[type, ...]
    store: StateStore[Any]
    step: Callable[[Any, Envelope[Any], datetime], Decision[Any]]


class StreamsRuntime:
    """The I/O around the rules: routing, publishing, state writes, metrics. No decisions here."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.guard = guard = settings.guard
        worker = settings.worker
        self.levels = AccountLevelsBook(settings.database_url)
        prefix, partitions = settings.topic_prefix, settings.topic_partitions

        # The queue holds runs of records (a partition's share of a fetch, see infra/internals.py), a few
        # fetches' worth; when it fills, the fetch loop pauses the partitions that filled it.
        self.inputs = app.topic(*(t.name(prefix) for t in INPUTS), key_serializer="raw", value_serializer="raw",
                                partitions=partitions, maxsize=RUNS_BUFFERED)
        self.topic_of = {t.name(prefix): t for t in INPUTS}
        self.output_of = {p.event_type: t.name(prefix) for t in written_by("streams") for p in t.payloads}
        self.dead_letters = DEAD_LETTERS.name(prefix)

        def table(name: str) -> Any:
            return app.Table(name, partitions=partitions)  # json keys and values

        flush = worker.state_flush_seconds
        self.reconciliation = Processor(
            "reconciliation",
            (PositionReport, AccountSyncFailed, TradeApproved, TradeClosedByPlatform, ClosePosition,
             PositionClosed, PositionCloseFailed),
            StateStore(table("reconciliation"), ReconciliationState, flush_seconds=flush),
            lambda state, event, now: reconciliation.handle(state, event, guard))
        self.drawdown = Processor(
            "drawdown", (AccountReport, AccountSyncFailed, PositionReport, ClosePosition, UnlockAccount),
            StateStore(table("drawdown"), DrawdownState, flush_seconds=flush,
                       watch=lambda state: state.pending is not None),
            lambda state, event, now: drawdown.handle(state, event, self.levels.get(event.account_id), guard, now))
        self.market = Processor(
            "market", (TickReport, PositionReport),
            StateStore(table("market"), market.MarketState, flush_seconds=flush),
            lambda state, event, now: market.handle(state, event, guard))
        self.alerts = Processor(
            "alerts", (ClosePosition, PositionClosed, PositionCloseFailed, PositionCloseSuperseded,
                       PositionCloseDeferred, PositionReport, UnlockAccount),
            StateStore(table("alerts"), AlertsState, flush_seconds=flush,
                       watch=lambda state: any(alert.done_at is None for alert in state.alerts.values())),
            lambda state, event, now: lifecycle.handle(state, event, guard))
        self.processors = (self.reconciliation, self.drawdown, self.market, self.alerts)
        #: Called with each batch once its inputs are acked (for the bench); None: nothing.
        self.on_settled: Callable[[Sequence[Run]], None] | None = None
        self.routes: dict[type, tuple[Processor, ...]] = {}
        for processor in self.processors:
            for kind in processor.reads:
                self.routes[kind] = self.routes.get(kind, ()) + (processor,)
        #: Held while a batch runs through the rules; batches whose sends await acknowledgement (each
        #: settles after the one before it, so the last settled means all have).
        self.busy = asyncio.Lock()
        self.in_flight: deque[asyncio.Future[None]] = deque()
        self.last_settling: asyncio.Future[None] | None = None
        #: Per partition, the offset after the last record applied in the present assignment.
        self._next_offset: dict[Any, int] = {}
        #: Set by a handover until the next assignment: runs still queued are not applied (they are
        #: read again from the committed offset, by whoever owns their partition next).
        self._handed_over = False

    def assigned(self) -> None:
        """A new assignment: nothing handed over, no record applied in it yet."""
        self._handed_over, self._next_offset = False, {}

    # ------------------------------------------------------------------------------------- handover

    async def take(self, runs: Sequence[Run]) -> None:
        """Run a batch through the rules and queue its settling; wait while too many are in flight.

        Runs fetched before a rebalance are dropped: their partition's records are read again
        from the committed offset, by whichever worker owns it now."""
        async with self.busy:
            if self._handed_over:
                return
            runs = [run for run in runs if run.current()]
            fresh = self._unapplied(runs)
            if not runs:
                return
            sent = await self.apply(fresh) if fresh else []
            # Every run is acked, the records applied before too: Faust commits only past acked offsets.
            self.last_settling = asyncio.ensure_future(self.settle(runs, sent, self.last_settling))
            self.in_flight.append(self.last_settling)
        limit = self.settings.worker.max_batches_in_flight
        while self.in_flight and (self.in_flight[0].done() or len(self.in_flight) > limit):
            await self.in_flight.popleft()

    def _unapplied(self, runs: Sequence[Run]) -> list[Run]:
        """The runs less the records this worker has applied already in the present assignment.

        After an assignment, Faust's recovery seeks each partition to its committed offset; a
        run fetched before that seek and the same records fetched again after it would otherwise
        both be applied, the second time on a state that already holds them."""
        fresh: list[Run] = []
        for run in runs:
            start = self._next_offset.get(run.tp, -1)
            records = [r for r in run.records if r.offset >= start]
            if records:
                self._next_offset[run.tp] = records[-1].offset + 1
                fresh.append(run if len(records) == len(run.records) else run.subset(records))
        return fresh

    async def hand_over(self) -> None:
        """Before partitions move (a rebalance, a stop): finish the batches under way, write every
        changed state (volatile parts too) and commit the offsets past them; batches of this
        assignment still queued are dropped (read again from there after the rebalance). The next owner
        restores a state that matches its starting offset: neither older (a reading's effects
        lost) nor newer (records applied twice, decisions made again under new ids)."""
        async with self.busy:
            self._handed_over = True
            if self.last_settling is not None:
                await self.last_settling
            sent: list[Any] = []
            for processor in self.processors:
                sent += await processor.store.flush(force=True)
            if sent:
                await asyncio.gather(*sent)
            committed = await self.app.commit_acked()
        log.info("handover: %d states written, offsets %s", len(sent), "committed" if committed else "NOT committed")

    # ------------------------------------------------------------------------------------- batches

    async def settle(self, runs: Sequence[Run], sent: list[Any], after: Awaitable[None] | None = None) -> None:
        """Wait for a batch's sends (and for the batch before it, ``after``); then ack its inputs."""
        if sent:
            await asyncio.gather(*sent)
        if after is not None:
            await after
        for run in runs:
            run.ack()
        if self.on_settled is not None:
            self.on_settled(runs)

    async def apply(self, runs: Sequence[Run]) -> list[Any]:
        """Run a batch through the rules and send what they decided; return the sends, not awaited."""
        await self.levels.ready()
        now = utcnow()
        sent: list[Any] = []
        pacer = Pacer(slice=YIELD_AFTER_SECONDS)
        for run in runs:
            topic, partition = self.topic_of[run.tp.topic], run.tp.partition
            for record in run.records:
                sent += await self._apply_record(record, topic, partition, now)
                await pacer.pace()
        for processor in self.processors:
            sent += await processor.store.flush(pace=pacer.pace)
        return sent

    async def _apply_record(self, record: Any, topic: Topic, partition: int, now: datetime) -> list[Any]:
        """Decode one record, run every rule set that reads it, send what they decided."""
        try:
            envelope = decode(topic, record.value)
        except DecodeError as error:
            return [await self._dead_letter(record, error.reason)]
        refused = await self._refusal(envelope, partition)
        if refused is not None:
            return [await self._dead_letter(record, refused)]
        sent: list[Any] = []
        for processor in self.routes.get(type(envelope.payload), ()):
            try:
                outputs = self._step(processor, envelope, partition, now)
            except Exception as error:  # one account's bad event must not stop the others
                log.exception("%s rule failed on %s %s", processor.name, envelope.event_type, envelope.event_id)
                sent.append(await self._dead_letter_envelope(envelope, f"{processor.name} rule failed: {error!r}"))
                continue
            sent += [self._on_warning_published(output, await self._publish(output)) for output in outputs]
        if isinstance(envelope.payload, PositionReport):
            metrics.reconciliation_latency_seconds.observe(max(0.0, time.time() - envelope.occurred_at.timestamp()))
        return sent

    async def _refusal(self, envelope: Envelope[Any], partition: int) -> str | None:
        """Why the platform's input cannot be used (an unknown user or approval), or None."""
        payload = envelope.payload
        if not isinstance(payload, (TradeApproved, TradeClosedByPlatform)):
            return None
        if not await self.levels.knows(envelope.account_id):
            return f"unknown user {envelope.account_id!r}: not in users"
        if isinstance(payload, TradeClosedByPlatform) and \
                payload.approval_id not in self.reconciliation.store.get(envelope.account_id, partition).expected:
            return (f"unknown approval {payload.approval_id!r} of {envelope.account_id}: never approved "
                    "(or closed longer ago than the retention)")
        return None

    @staticmethod
    def _step(processor: Processor, envelope: Envelope[Any], partition: int, now: datetime
              ) -> tuple[Envelope[Any], ...]:
        """Run one rule set on one event against the account's state; keep the new state."""
        store, account = processor.store, envelope.account_id
        entry = store.entry(account, partition)
        decision = processor.step(entry.state, envelope, now)
        store.put_entry(account, entry, decision.state)
        return decision.outputs

    async def sweep(self) -> datetime | None:
        """Fire due liquidations (also after a restart: the deadline is in the table); flush state
        unless a batch is under way.

        Returns the earliest deadline still pending (None: none), so the caller can sleep until it
        rather than a whole interval: a liquidation fires at its deadline, not up to an interval after."""
        if not self._ready():
            return None
        now = utcnow()
        sent: list[Any] = []
        store = self.drawdown.store
        active = self._active_partitions()
        upcoming: datetime | None = None
        for account, partition in store.watched(self.app.consumer_generation_id):
            if active is not None and partition not in active:
                continue
            state = store.get(account)
            if state.pending is None:
                continue
            if state.pending.deadline > now:
                upcoming = state.pending.deadline if upcoming is None else min(upcoming, state.pending.deadline)
                continue
            decision = liquidation.fire_due(state, now)
            store.put(account, decision.state)
            sent += [await self._publish(output) for output in decision.outputs]
        sent += await self._retry_alerts(now, active)
        if not self.busy.locked():
            # Mid-batch (the batch awaits a send, or yields), the states hold part of the batch: the
            # batch's own flush writes them, and its inputs are acked only once those writes are.
            for processor in self.processors:
                sent += await processor.store.flush()
        if sent:
            await asyncio.gather(*sent)
        return upcoming

    async def _retry_alerts(self, now: datetime, active: set[int] | None) -> list[Any]:
        """Send the retries of guard closes whose time has come (the schedule is in the alerts table)."""
        sent: list[Any] = []
        store = self.alerts.store
        for account, partition in store.watched(self.app.consumer_generation_id):
            if active is not None and partition not in active:
                continue
            state = store.get(account)
            if not lifecycle.due(state, now, self.guard):
                continue
            decision = lifecycle.fire_due(state, now, self.guard)
            store.put(account, decision.state)
            sent += [await self._publish(output) for output in decision.outputs]
        return sent

    # ------------------------------------------------------------------------------------- output

    def _on_warning_published(self, envelope: Envelope[Any], sent: Any) -> Any:
        """When a liquidation's warning is acknowledged: the owner's notice runs from then at the latest."""
        payload = envelope.payload
        if isinstance(payload, GuardAlertRaised) and payload.action_taken is ActionTaken.WARNING_SENT and \
                "deadline" in payload.details:
            sent.add_done_callback(lambda future: future.cancelled() or future.exception() is not None or
                                   self._warning_published(envelope, utcnow()))
        return sent

    def _warning_published(self, envelope: Envelope[Any], published_at: datetime) -> None:
        delay = (published_at - envelope.occurred_at).total_seconds()
        metrics.warning_publish_delay_seconds.observe(max(0.0, delay))
        store = self.drawdown.store
        state = store.get(envelope.account_id)
        pending = state.pending
        if pending is not None and pending.cause.event_id == envelope.causation_id:
            earliest = published_at + timedelta(seconds=float(pending.inputs.get("close_grace_seconds", 0)))
            inputs = pending.inputs | {"warning_published_at": published_at.isoformat()}
            deadline = max(pending.deadline, earliest)
            store.put(envelope.account_id, replace(state, pending=replace(
                pending, deadline=deadline, inputs=inputs | {"deadline": deadline.isoformat()})))
        bound = self.settings.worker.warning_delay_alert_seconds
        if delay > bound:
            alert = OperatorAlertRaised(
                kind="warning_delayed", severity="critical", service="worker",
                message=f"the liquidation warning for {envelope.account_id} went out {delay:.1f} s after its report "
                        f"(bound {bound:g} s); the owner's notice runs from the warning",
                details={"alert_event_id": str(envelope.event_id), "reading_at": envelope.occurred_at.isoformat(),
                         "published_at": published_at.isoformat(), "delay_seconds": round(delay, 3)})
            log.error("operator alert: %s", alert.message)
            asyncio.ensure_future(self._send(OPERATOR_ALERTS.name(self.settings.topic_prefix),
                                             derived(alert, cause=envelope, rule="operations/warning-delayed")))

    async def _publish(self, envelope: Envelope[Any]) -> Any:
        """Send an output; return the future of its acknowledgement (not awaited here).

        Straight to the app's producer: the bytes are ready, and Faust's ``Topic.send`` layers
        (a future message, a pending message, sensors) cost more than the send itself."""
        self._count(envelope)
        return await self._send(self.output_of[envelope.event_type], envelope)

    async def _dead_letter(self, message: Any, reason: str) -> Any:
        letter = dead_letter(consumer=CONSUMER, topic=message.topic, partition=message.partition,
                             offset=message.offset, key=message.key, value=message.value, reason=reason)
        metrics.dead_letters_total.labels(CONSUMER).inc()
        log.warning("dead-lettered %s[%s]@%s: %s", message.topic, message.partition, message.offset, reason)
        return await self._send(self.dead_letters, letter)

    async def _send(self, topic: str, envelope: Envelope[Any]) -> Any:
        return await self.app.producer.send(topic, encode_key(envelope.account_id), encode(envelope),
                                            partition=None, timestamp=None, headers=None)

    async def _dead_letter_envelope(self, envelope: Envelope[Any], reason: str) -> Any:
        class _Message:  # the parts dead_letter() reads, for an event that decoded but broke a rule
            topic, partition, offset, key = "decoded", 0, 0, envelope.account_id.encode()
            value = encode(envelope)

        return await self._dead_letter(_Message, reason)

    def _count(self, envelope: Envelope[Any]) -> None:
        payload = envelope.payload
        if isinstance(payload, DivergenceDetected) and payload.divergence_reason is not None:
            metrics.reconciliation_divergences_total.labels(payload.divergence_reason.value).inc()
        elif isinstance(payload, DivergenceResolved) and payload.divergence_reason is not None and \
                payload.divergence_since is not None:
            metrics.divergence_age_seconds.labels(payload.divergence_reason.value).observe(
                max(0.0, (envelope.occurred_at - payload.divergence_since).total_seconds()))
        elif isinstance(payload, GuardAlertRaised) and payload.revision == 0 and \
                payload.action_taken is ActionTaken.WARNING_SENT and \
                payload.alert_type in (AlertType.DRAWDOWN_CRITICAL, AlertType.DAILY_LOSS_CRITICAL):
            metrics.drawdown_guard_triggers_total.inc()
        elif isinstance(payload, AccountAssessed):
            metrics.account_equity_gbp.labels(envelope.account_id).set(payload.equity_gbp)
            metrics.account_drawdown_percent.labels(envelope.account_id).set(payload.drawdown_percent)
            critical = self.levels.get(envelope.account_id).critical_drawdown_percent
            metrics.account_critical_distance_percent.labels(envelope.account_id).set(
                critical - payload.drawdown_percent)

    # ------------------------------------------------------------------------------------ plumbing

    def _ready(self) -> bool:
        return settled(self.app)

    def _active_partitions(self) -> set[int] | None:
        return assigned_partitions(self.app, ACCOUNT_REPORTS.name(self.settings.topic_prefix))


#: The shortest sleep between sweeps: a sweep woken a hair before its deadline (the loop's clock
#: resolution, or wall time a little behind the monotonic clock) finds nothing due and looks again soon.
MIN_SWEEP_DELAY = 0.001


def sweep_delay(now: datetime, upcoming: datetime | None, interval: float) -> float:
    """Seconds until the next sweep: until the next deadline when it comes within ``interval``,
    else ``interval`` (deadlines set meanwhile, by a batch, are seen at the next sweep)."""
    if upcoming is None:
        return interval
    return min(interval, max(MIN_SWEEP_DELAY, (upcoming - now).total_seconds()))


async def sweep_forever(sweep: Callable[[], Awaitable[datetime | None]], *, interval: float,
                        sleep: Callable[[float], Awaitable[None]], stopping: Callable[[], bool],
                        clock: Callable[[], datetime] = utcnow) -> None:
    """Sweep, then sleep until the next deadline or for ``interval``, whichever is sooner; until stopping.

    A fixed timer fired a liquidation up to an interval after its deadline (0.1 s on average at 0.2 s),
    all of it added to the guard's reaction. Early is never a risk: ``fire_due`` refuses a deadline
    not yet reached, and the sweep then sleeps the remainder."""
    delay = interval
    while not stopping():
        await sleep(delay)
        if stopping():
            return
        delay = sweep_delay(clock(), await sweep(), interval)


def app_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}-streams"


def tuned_app(name: str, settings: Settings) -> StreamsApp:
    """A Faust app tuned for tansu (short session and fetch wait, raw bytes), with no agents yet.

    A stream's buffer holds 16k events (Faust's default 4k paused the partitions, and a paused
    partition waits for a fresh fetch, whenever a reader ran a few batches behind); the worker's
    own inputs are queued in runs instead (``RUNS_BUFFERED``, see ``create_app``)."""
    if settings.kafka_bootstrap_servers is None:
        raise ValueError("the streams worker needs KAFKA_BOOTSTRAP_SERVERS (the embedded broker's address)")
    worker = settings.worker
    app = StreamsApp(
        name,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")],
        store="memory://", web_enabled=False, autodiscover=False,
        value_serializer="raw", key_serializer="raw",
        processing_guarantee="at_least_once", consumer_auto_offset_reset="earliest",
        broker_session_timeout=worker.session_timeout_seconds,
        broker_heartbeat_interval=max(0.5, worker.session_timeout_seconds / 6),
        broker_commit_interval=worker.commit_interval_seconds, topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        table_standby_replicas=0, producer_linger=0.002, stream_buffer_maxsize=16384, TableManager=TableManager,
        datadir=str(settings.data_dir / "faust"),
    )
    app.fetch_max_wait_ms = settings.consumer_fetch_max_wait_ms
    app.bootstrap_servers = settings.kafka_bootstrap_servers
    return app


def create_app(settings: Settings, *, name: str | None = None) -> faust.App:
    """The worker's app: topics and app id from ``settings.topic_prefix`` (or ``name``), tuned for tansu."""
    worker = settings.worker
    app = tuned_app(name or app_id(settings), settings)
    runtime = StreamsRuntime(app, settings)
    app.streams_runtime = runtime  # type: ignore[attr-defined] - for tests and the bench
    app.before_handover, app.after_assignment = runtime.hand_over, runtime.assigned

    # Iterating a topic registers it with the conductor, as an agent's stream would (see batching.py).
    channel = runtime.inputs.__aiter__()
    # The fetch loop hands these topics' messages straight to the channel's queue (see infra/internals.py).
    deliver = direct_delivery(app, channel.queue)
    app.direct_topics.update({name: deliver for name in runtime.topic_of})

    @app.task
    async def guard_accounts() -> None:
        # Pipelined: the next batch runs through the rules while the broker acknowledges the last
        # ones' outputs and changelog records. Each batch's inputs are acked only once its own sends
        # and every earlier batch's are acknowledged (at least once, offsets in order); at most
        # ``max_batches_in_flight`` wait, and a failed send fails the task as before.
        async for runs in batches(channel.queue, max_events=worker.batch_size,
                                  within=worker.batch_within_seconds, size=len):
            await runtime.take(runs)

    @app.task
    async def fire_due_liquidations() -> None:
        await sweep_forever(runtime.sweep, interval=worker.sweep_interval_seconds, sleep=app.sleep,
                            stopping=lambda: app.should_stop)

    @app.task
    async def load_levels() -> None:
        await runtime.levels.refresh()

    @app.task
    async def tune_gc() -> None:
        tune_garbage_collector()  # once the app has started: its start-up objects are frozen too

    @app.timer(worker.levels_refresh_seconds, name="refresh_levels")
    async def refresh_levels() -> None:
        await runtime.levels.refresh()

    return app
