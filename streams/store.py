"""Per-account rule state over a Faust table: parsed once, written only when it changed.

The table (memory store, changelog-backed) holds ``{"partition": p, "state": <json>}`` per
account. Parsed states are cached; a cache entry is trusted while the table still holds the very
value it was written as (recovery or another worker's write replaces it). A state is written
when its durable part changed (dataclass equality ignores ``compare=False`` fields), or when
only its volatile part changed and the last write is older than its account's period (0.8 to 1.0
times ``flush_seconds``, see ``VOLATILE_SPREAD``).

Which of the two a change is gets decided once, at ``put``: a durable change waits for the next
flush; a volatile-only one waits in a heap ordered by when it falls due. A flush then writes the
durable ones and pops the due ones, rather than comparing every changed state again each time
(most changes are volatile: at 1,000 accounts, that rescan was a fifth of the worker's time).

Changelog records are sent straight to the app's producer (``infra.internals.send_changelog``),
not through Faust's buffer; ``flush`` returns the sends' futures, so the caller acks its inputs
only once they are durable.
"""

from __future__ import annotations

import heapq
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from faust.tables.table import Table

from infra.internals import send_changelog, table_rows
from streams.state import dump_state, load_state

S = TypeVar("S")

#: A volatile change falls due between ``1 - VOLATILE_SPREAD`` and 1 times ``flush_seconds`` after the
#: last write, by account. With one period for all, the accounts a round of polls changed together
#: stayed due together: at 1,000 accounts every fifth second a batch's flush wrote thousands of states
#: at once (a tenth to a third of a second without handing the loop back, in the guard's reaction).
#: Periods a little apart drift the writes apart, to about as many in every second.
VOLATILE_SPREAD = 0.2


def spread_phase(account_id: str) -> float:
    """A fixed number in [0, 1) per account (not ``hash``: that changes with each process)."""
    return zlib.crc32(account_id.encode()) / 2**32


@dataclass
class _Entry(Generic[S]):
    state: S
    written: S
    raw: dict[str, Any] | None
    partition: int
    written_at: float
    dirty: bool = False
    #: When a volatile-only change falls due (its heap item's time); None: no heap item stands for it.
    due: float | None = None


class StateStore(Generic[S]):
    """``watch``: which states a timer must look at (a pending liquidation, an unanswered close);
    ``watched`` lists the accounts holding one, so a sweep reads those, not every account."""

    def __init__(self, table: Table, state_type: type[S], *, flush_seconds: float,
                 watch: Callable[[S], bool] = lambda state: False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        self.state_type = state_type
        self.flush_seconds = flush_seconds
        self._watch = watch
        self._clock = clock
        self._cache: dict[str, _Entry[S]] = {}
        self._dirty: set[str] = set()  # every account with an unwritten change (a forced flush writes them)
        self._durable: set[str] = set()  # those whose durable part changed: the next flush writes them
        self._volatile: list[tuple[float, str]] = []  # (due, account): volatile-only changes, soonest first
        self._watched: dict[str, int] = {}  # account -> partition, of states ``watch`` accepted
        self._indexed_for: object = None  # the assignment the index covers every restored row of

    def get(self, account_id: str, partition: int | None = None) -> S:
        return self._entry(account_id, partition).state

    def put(self, account_id: str, state: S, partition: int | None = None) -> None:
        self.put_entry(account_id, self._entry(account_id, partition), state)

    def entry(self, account_id: str, partition: int | None = None) -> _Entry[S]:
        """The account's cache entry (its ``state``), for a ``put_entry`` after the rule ran."""
        return self._entry(account_id, partition)

    def put_entry(self, account_id: str, entry: _Entry[S], state: S) -> None:
        if state is entry.state:
            return
        entry.state, entry.dirty = state, True
        self._dirty.add(account_id)
        self._index(account_id, entry)
        if account_id in self._durable:
            return  # written at the next flush whatever changes now
        if state != entry.written:
            self._durable.add(account_id)
        elif entry.due is None:
            entry.due = entry.written_at + self.flush_seconds * (1 - VOLATILE_SPREAD * spread_phase(account_id))
            heapq.heappush(self._volatile, (entry.due, account_id))

    async def flush(self, *, force: bool = False, pace: Callable[[], Awaitable[None]] | None = None) -> list[Any]:
        """Write the changed states to the table and send them to its changelog; return the sends.

        The durable changes, and the volatile-only ones whose last write is (about) ``flush_seconds``
        old; every change when ``force``d (before a handover). ``pace`` is awaited after each write
        (a batch's flush hands the loop back as its events do, see ``streams.batching.Pacer``)."""
        now = self._clock()
        due = list(self._dirty if force else self._durable | self._due_volatile(now))
        sent: list[Any] = []
        for account_id in due:
            # Off the lists before the send is awaited: a change put meanwhile is listed anew.
            self._durable.discard(account_id)
            self._dirty.discard(account_id)
            entry = self._cache.get(account_id)
            if entry is not None and entry.dirty:
                sent.append(await self._write(account_id, entry, now))
                if pace is not None:
                    await pace()
        return sent

    def _due_volatile(self, now: float) -> set[str]:
        """Pop the volatile-only changes due by ``now`` (items left behind by a write since are skipped)."""
        due: set[str] = set()
        while self._volatile and self._volatile[0][0] <= now:
            at, account_id = heapq.heappop(self._volatile)
            entry = self._cache.get(account_id)
            if entry is not None and entry.dirty and entry.due == at:
                due.add(account_id)
        return due

    def watched(self, assignment: object) -> list[tuple[str, int]]:
        """Accounts (and partitions) whose state ``watch`` accepted when last read or written.

        Rows change under the cache only when a recovery restores them, at an assignment: the
        first call for a new ``assignment`` reads every row once, so restored states are indexed."""
        if assignment != self._indexed_for:
            for account_id in list(table_rows(self.table)):
                self._entry(account_id, None)
            self._indexed_for = assignment
        return list(self._watched.items())

    def _index(self, account_id: str, entry: _Entry[S]) -> None:
        if self._watch(entry.state):
            self._watched[account_id] = entry.partition
        else:
            self._watched.pop(account_id, None)

    def _entry(self, account_id: str, partition: int | None) -> _Entry[S]:
        raw = table_rows(self.table).get(account_id)
        entry = self._cache.get(account_id)
        if entry is not None and entry.raw is raw:
            if partition is not None and partition != entry.partition:
                entry.partition = partition
                self._index(account_id, entry)
            return entry
        state = load_state(self.state_type, raw["state"] if raw else None)
        stored_partition = int(raw["partition"]) if raw else 0
        entry = _Entry(state, state, raw, partition if partition is not None else stored_partition, self._clock())
        self._cache[account_id] = entry
        self._index(account_id, entry)
        return entry

    async def _write(self, account_id: str, entry: _Entry[S], now: float) -> Any:
        raw = {"partition": entry.partition, "state": dump_state(entry.state)}
        table_rows(self.table)[account_id] = raw
        entry.raw, entry.written, entry.written_at, entry.dirty, entry.due = raw, entry.state, now, False, None
        return await send_changelog(self.table, account_id, raw, partition=entry.partition)
