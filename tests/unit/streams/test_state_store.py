"""The state store's index of watched accounts: what a sweep reads instead of every account."""

from __future__ import annotations

import faust
import pytest

from infra.internals import table_rows
from streams.drawdown.state import DrawdownState
from streams.state import dump_state
from streams.store import StateStore


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
