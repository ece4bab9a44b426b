"""The faults of a fault-simulation run, injected around the production worker and executor.

``CrashingWorker`` is the in-memory streams worker (``simulation.worker.Worker``, the production
rules) that crashes on a plan: its state tables remember what each write replaced (the changelog's
previous record), so a restart can come back with the state the changelog holds (every update; one
table's last update of one account missing; or the state as of the last committed offset), through the JSON round trip of
``Worker.restart``; then the consumer re-reads the inputs after the last committed offset (its own
close commands read back among them, as close-commands is one of its input topics), and the inputs
that came while it was down. While down, its timer does not fire.

``FaultyExecutor`` is the runner's close executor (``Executor.handle`` with its in-memory ledger) on
terminals that can lose the answer to an ``order_send`` (the close is done, the reply never comes),
and that can die after trading and before publishing: it then restarts with a ledger read from what
it had published on close-results (``row_of_result``, as ``LogLedger.load`` does), and the command is
delivered again, at once or later.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from producers.executor.ledger import LogLedger, row_of_result
from producers.mt5 import constants as c
from producers.mt5.gateway import Gateway
from schemas import Envelope
from schemas.commands import ClosePosition
from simulation.faultplan import ExecutorFault, WorkerCrash
from simulation.runner import _Executor
from simulation.worker import READ_BACK, RULES, Worker

MISSING = object()


@dataclass
class Changelog:
    """Every state write, with the value it replaced and the input it belongs to (the newest last)."""

    entries: deque[tuple[int, str, str, Any]] = field(default_factory=lambda: deque(maxlen=50_000))
    input_no: int = 0
    recording: bool = True


class ChangelogTable(dict[str, Any]):
    """A processor's state table whose writes go to the changelog too."""

    def __init__(self, name: str, changelog: Changelog) -> None:
        super().__init__()
        self.name, self.changelog = name, changelog

    def __setitem__(self, key: str, value: Any) -> None:
        if self.changelog.recording:
            self.changelog.entries.append((self.changelog.input_no, self.name, key, self.get(key, MISSING)))
        super().__setitem__(key, value)


@dataclass
class CrashingWorker(Worker):
    """The worker, crashing and restarting as ``crashes`` (sorted by time) say."""

    crashes: list[tuple[datetime, WorkerCrash]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.changelog = Changelog()
        self.states = {rule.name: ChangelogTable(rule.name, self.changelog) for rule in RULES}
        self.recent: deque[Envelope[Any]] = deque(maxlen=64)  # inputs not yet known to be committed
        self.down_until: datetime | None = None
        self.backlog: list[Envelope[Any]] = []  # what the consumer will read when it is back

    def process(self, event: Envelope[Any], now: datetime | None = None) -> list[Envelope[Any]]:
        now = now or event.occurred_at
        outputs = self._crash_or_restart(now)
        if self.down_until is not None:
            self.backlog.append(event)
            return outputs
        return outputs + self._input(event, now)

    def sweep(self, now: datetime) -> list[Envelope[Any]]:
        outputs = self._crash_or_restart(now)
        return outputs if self.down_until is not None else outputs + self._read_back(super().sweep(now))

    def next_due(self) -> datetime | None:
        return self.down_until if self.down_until is not None else super().next_due()

    def _input(self, event: Envelope[Any], now: datetime) -> list[Envelope[Any]]:
        self.changelog.input_no += 1
        self.recent.append(event)
        return self._read_back(super().process(event, now))

    def _read_back(self, outputs: list[Envelope[Any]]) -> list[Envelope[Any]]:
        """The worker's own commands it has read back (close-commands is one of its input topics) are
        uncommitted inputs like any other: a crash delivers them again, after what preceded them. (Their
        state writes count as the preceding input's: a restore as of a commit between them keeps those
        writes, and the command, delivered again, finds its effect done.)"""
        for output in outputs:
            if isinstance(output.payload, READ_BACK):
                self.changelog.input_no += 1
                self.recent.append(output)
        return outputs

    def _crash_or_restart(self, now: datetime) -> list[Envelope[Any]]:
        if self.down_until is None and self.crashes and self.crashes[0][0] <= now:
            _, crash = self.crashes.pop(0)
            self._crash(crash)
            self.down_until = now + timedelta(seconds=crash.downtime)
        if self.down_until is not None and self.down_until <= now:
            return self._come_back(now)
        return []

    def _crash(self, crash: WorkerCrash) -> None:
        """What the restarted worker will find: its changelog (per ``restore``) and the uncommitted inputs."""
        again = list(self.recent)[len(self.recent) - min(crash.redeliver, len(self.recent)):]
        committed = self.changelog.input_no - len(again)
        entries = self.changelog.entries
        if crash.restore == "commit":
            while entries and entries[-1][0] > committed:
                self._undo(entries.pop())
        elif crash.restore == "short":  # that table's partition of the account: its last record missing
            last = next((i for i in range(len(entries) - 1, -1, -1) if entries[i][1:3] == crash.short), None)
            if last is not None:
                self._undo(entries[last])
                del entries[last]
        self.recent.clear()
        self.backlog = again
        self._count("worker crashes")
        self._count("inputs redelivered", len(again))

    def _undo(self, entry: tuple[int, str, str, Any]) -> None:
        _, rule, key, previous = entry
        table = self.states[rule]
        if previous is MISSING:
            dict.pop(table, key, None)
        else:
            dict.__setitem__(table, key, previous)

    def _come_back(self, now: datetime) -> list[Envelope[Any]]:
        self.changelog.recording = False
        self.restart()  # every state through its JSON round trip, as read from the changelog topic
        self.changelog.recording = True
        self.down_until, backlog, self.backlog = None, self.backlog, []
        outputs: list[Envelope[Any]] = []
        for event in backlog:
            outputs += self._input(event, now)
        return outputs

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n


class LossyGateway:
    """An executor's terminal whose next successful ``order_send`` answer can be lost on the way back."""

    def __init__(self, inner: Gateway) -> None:
        self.inner = inner
        self.lose_next = False
        self.error: tuple[int, str] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def order_send(self, request: Any) -> Any:
        result = self.inner.order_send(request)
        if self.lose_next and result is not None and result.retcode == c.TRADE_RETCODE_DONE:
            self.lose_next = False
            self.error = (c.RES_E_INTERNAL_FAIL_RECEIVE, "IPC recv failed")
            return None  # executed on the server; the answer is lost
        return result

    def last_error(self) -> tuple[int, str]:
        if self.error is not None:
            error, self.error = self.error, None
            return error
        return self.inner.last_error()


class FaultyExecutor(_Executor):
    """The runner's executor, failing on its n-th command as ``faults`` say."""

    def __init__(self, *args: Any, faults: dict[int, ExecutorFault], clock: Any, **kwargs: Any) -> None:
        super().__init__(*args, clock=clock, **kwargs)
        self.gateways = {user: LossyGateway(g) for user, g in self.gateways.items()}
        self.faults, self.handled = faults, 0
        self.published: list[Envelope[Any]] = []
        self.later: list[tuple[datetime, Envelope[ClosePosition]]] = []  # commands to deliver again
        self.again: set[uuid.UUID] = set()
        self.dead = False
        self.stats: dict[str, int] = {}

    async def handle(self, envelope: Envelope[ClosePosition]) -> list[Envelope[Any]]:
        if envelope.event_id in self.again:  # a redelivery: no fault of its own
            self.again.discard(envelope.event_id)
            return await super().handle(envelope)
        fault = self.faults.get(self.handled)
        self.handled += 1
        if fault is None:
            return await super().handle(envelope)
        self.stats[fault.kind] = self.stats.get(fault.kind, 0) + 1
        if fault.kind == "lost_reply":
            gateway = self.gateways.get(envelope.payload.user_id)
            if gateway is not None:
                gateway.lose_next = True
            try:
                return await super().handle(envelope)
            finally:
                if gateway is not None:
                    gateway.lose_next = False
        self.dead = True  # it trades, then dies before its results are on the log
        try:
            await super().handle(envelope)
        finally:
            self.dead = False
        self.restart_from_log()
        if fault.kind == "crash":
            return await super().handle(envelope)
        self.later.append((self.clock() + timedelta(seconds=fault.delay), envelope))
        return []

    def restart_from_log(self) -> None:
        """A new process: its ledger is what close-results holds (as ``LogLedger.load`` reads it)."""
        self.ledger = LogLedger(None)
        for result in self.published:
            row = row_of_result(result)
            self.ledger.rows[(row.command_id, row.ticket)] = row

    def due_again(self, now: datetime) -> list[Envelope[ClosePosition]]:
        """The commands whose redelivery is due (each then handled without a fault of its own)."""
        due = [envelope for at, envelope in self.later if at <= now]
        self.later = [(at, envelope) for at, envelope in self.later if at > now]
        self.again.update(e.event_id for e in due)
        return due

    async def _publish(self, results: list[Envelope[Any]]) -> list[Envelope[Any]]:
        if self.dead:
            return []
        self.published += results
        return results
