"""A partition's fetched records across a rebalance (``infra/internals.py``, ``_Consumer._deliver_run``).

Found by the scale-out test: a run waiting on flow control while a rebalance went by was queued as
a run of the new generation, and moved the partition's read offset past the committed offset the
recovery had just set. The records from the committed offset on, fetched again, were then dropped
as duplicates, and the next commit went past records nobody had applied.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
from faust.types import TP

from infra.internals import StreamsApp

Record = namedtuple("Record", "offset value")
TOPIC = TP("delivery-check.account-reports", 0)
COMMITTED = 25


@pytest.fixture
def consumer() -> Any:
    app = StreamsApp("delivery-check", broker="kafka://127.0.0.1:1")  # built, never started
    consumer = app.consumer
    consumer._read_offset[TOPIC] = COMMITTED - 1
    return consumer


def records(first: int, last: int) -> list[Record]:
    return [Record(offset, b"") for offset in range(first, last + 1)]


async def test_a_run_delivered_in_its_generation_moves_the_read_offset(consumer):
    queued = []

    async def deliver(tp: TP, fetched: list[Record], generation: int) -> None:
        queued.append((tp, [r.offset for r in fetched], generation))

    generation = consumer.app.consumer_generation_id
    await consumer._deliver_run(TOPIC, records(25, 30), deliver, generation)
    assert queued == [(TOPIC, list(range(25, 31)), generation)]
    assert consumer._read_offset[TOPIC] == 30


async def test_a_run_held_up_by_a_rebalance_keeps_its_generation_and_leaves_the_read_offset(consumer):
    queued = []

    async def deliver_during_a_rebalance(tp: TP, fetched: list[Record], generation: int) -> None:
        consumer.app.consumer_generation_id = generation + 1  # the assignment, then the recovery's seek
        consumer._read_offset[TOPIC] = COMMITTED
        queued.append((tp, [r.offset for r in fetched], generation))

    generation = consumer.app.consumer_generation_id
    await consumer._deliver_run(TOPIC, records(28, 30), deliver_during_a_rebalance, generation)
    assert queued == [(TOPIC, [28, 29, 30], generation)], "queued as a run of the generation it was fetched in"
    assert consumer._read_offset[TOPIC] == COMMITTED, "the records from the committed offset are read again"


async def test_a_run_fetched_before_a_rebalance_began_is_not_delivered(consumer):
    queued = []

    async def deliver(tp: TP, fetched: list[Record], generation: int) -> None:
        queued.append(fetched)

    generation = consumer.app.consumer_generation_id
    consumer.suspend_flow.set()
    await consumer._deliver_run(TOPIC, records(25, 30), deliver, generation)
    consumer.suspend_flow.clear()
    consumer.app.consumer_generation_id = generation + 1
    await consumer._deliver_run(TOPIC, records(25, 30), deliver, generation)
    assert queued == []
    assert consumer._read_offset[TOPIC] == COMMITTED - 1
