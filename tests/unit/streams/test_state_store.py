"""The state store's index of watched accounts: what a sweep reads instead of every account."""

from __future__ import annotations

from dataclasses import dataclass

import faust
import pytest

from infra.internals import table_rows
from streams.drawdown.state import DrawdownState
from streams.state import dump_state, load_state
from streams.store import VOLATILE_SPREAD, StateStore, spread_phase


@pytest.fixture
def store() -> StateStore[DrawdownState]:
    app = faust.App("state-store-check", broker="kafka://127.0.0.1:1", store="memory://")  # built, never started
    return StateStore(app.Table("drawdown", partitions=4), DrawdownState, flush_seconds=5.0,
                      watch=lambda state: state.warning_active)


def test_a_state_put_is_watched_while_the_predicate_holds(store) -> None:
    store.put("a", DrawdownState(warning_active=True), partition=1)
    store.put("b", DrawdownState(), partition=2)
    assert store.watched(assignment=1) == [("a", 1)]
    store.put("a", DrawdownState())
    assert store.watched(assignment=1) == []


def test_the_index_follows_an_account_to_its_partition(store) -> None:
    store.put("a", DrawdownState(warning_active=True), partition=1)
    store.get("a", partition=3)
    assert store.watched(assignment=1) == [("a", 3)]


def test_rows_restored_for_a_new_assignment_are_indexed(store) -> None:
    store.put("a", DrawdownState(), partition=1)
    assert store.watched(assignment=1) == []
    # a recovery restores rows under the cache (a changelog written by another worker)
    table_rows(store.table)["a"] = {"partition": 1, "state": dump_state(DrawdownState(warning_active=True))}
    table_rows(store.table)["c"] = {"partition": 0, "state": dump_state(DrawdownState(warning_active=True))}
    assert sorted(store.watched(assignment=2)) == [("a", 1), ("c", 0)]
    assert store.get("c").warning_active


# --- what a flush writes: durable changes at once, volatile-only ones once they are old enough ---------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Timed:
    store: StateStore[DrawdownState]
    clock: Clock
    written: list[str]


@pytest.fixture
def timed(monkeypatch) -> Timed:
    """A store on a clock of the test's, whose changelog sends are listed instead of sent."""
    written: list[str] = []

    async def send(table, key, value, *, partition):
        written.append(key)
        return key

    monkeypatch.setattr("streams.store.send_changelog", send)
    clock = Clock()
    app = faust.App("state-store-flush", broker="kafka://127.0.0.1:1", store="memory://")  # built, never started
    return Timed(StateStore(app.Table("drawdown", partitions=4), DrawdownState, flush_seconds=5.0, clock=clock),
                 clock, written)


async def test_a_durable_change_is_written_at_the_next_flush(timed) -> None:
    store, written = timed.store, timed.written
    store.put("a", DrawdownState(peak_equity_gbp=10_000), partition=1)
    assert await store.flush() == ["a"] and written == ["a"]
    assert await store.flush() == [], "written once"


async def test_a_volatile_change_waits_until_the_last_write_is_flush_seconds_old(timed) -> None:
    store, clock = timed.store, timed.clock
    store.put("a", DrawdownState(peak_equity_gbp=10_000), partition=1)
    await store.flush()
    store.put("a", DrawdownState(peak_equity_gbp=10_000, untrusted=1))  # compare=False: volatile
    period = 5.0 * (1 - VOLATILE_SPREAD * spread_phase("a"))
    clock.now += period - 0.01
    assert await store.flush() == [], "not yet due"
    store.put("a", DrawdownState(peak_equity_gbp=10_000, untrusted=2))
    clock.now += 0.01
    assert await store.flush() == ["a"], "due after the last write, not after the last change"
    assert store.get("a").untrusted == 2 and table_rows(store.table)["a"]["state"] == dump_state(store.get("a"))


async def test_volatile_changes_made_together_fall_due_apart_and_within_flush_seconds(timed) -> None:
    """Accounts a round changed together are not written in one flush (a long stall of the worker)."""
    store, clock = timed.store, timed.clock
    accounts = [f"u-load-{n:03d}" for n in range(1000)]
    for account in accounts:
        store.put(account, DrawdownState(peak_equity_gbp=10_000), partition=1)
    await store.flush()
    for account in accounts:
        store.put(account, DrawdownState(peak_equity_gbp=10_000, untrusted=1))
    flushes = []  # a flush every 0.1 s
    for _ in range(50):
        clock.now += 0.1
        flushes.append(len(await store.flush()))
    assert sum(flushes) == len(accounts), "every one written within flush_seconds"
    assert sum(flushes[:39]) == 0, "none before (1 - VOLATILE_SPREAD) * flush_seconds"
    assert max(flushes) < 0.2 * len(accounts), flushes


async def test_a_durable_change_after_a_volatile_one_is_not_held_back(timed) -> None:
    store, clock = timed.store, timed.clock
    store.put("a", DrawdownState(untrusted=1), partition=1)  # volatile only: waits
    assert await store.flush() == []
    store.put("a", DrawdownState(untrusted=1, peak_equity_gbp=10_000))
    assert await store.flush() == ["a"]
    clock.now += 10
    assert await store.flush() == [], "the volatile change was written with it: nothing left due"


async def test_a_change_reverted_before_the_flush_is_still_written(timed) -> None:
    """Decided at put: the write is of the state as it is then, the same content as the last write."""
    store = timed.store
    store.put("a", DrawdownState(peak_equity_gbp=10_000), partition=1)
    store.put("a", DrawdownState())
    assert await store.flush() == ["a"]
    assert load_state(DrawdownState, table_rows(store.table)["a"]["state"]) == DrawdownState()


async def test_a_forced_flush_writes_every_change(timed) -> None:
    store, clock = timed.store, timed.clock
    store.put("a", DrawdownState(untrusted=1), partition=1)
    store.put("b", DrawdownState(peak_equity_gbp=1.0), partition=2)
    assert sorted(await store.flush(force=True)) == ["a", "b"]
    clock.now += 10
    assert await store.flush() == [], "a volatile change written by the forced flush is not due again"


async def test_a_change_put_while_its_write_is_sent_is_written_next(timed, monkeypatch) -> None:
    store = timed.store

    async def slow(table, key, value, *, partition):
        store.put("a", DrawdownState(peak_equity_gbp=2.0))  # a sweep's put while the send is awaited
        return key

    store.put("a", DrawdownState(peak_equity_gbp=1.0), partition=1)
    monkeypatch.setattr("streams.store.send_changelog", slow)
    assert await store.flush() == ["a"]
    monkeypatch.setattr("streams.store.send_changelog", lambda *a, **k: _done(a[1]))
    assert await store.flush() == ["a"] and store.get("a").peak_equity_gbp == 2.0


async def _done(key: str) -> str:
    return key
