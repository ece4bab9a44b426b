"""A partition's fetched records across rebalances and seeks (``infra/internals.py``, ``_Consumer._deliver_run``).

Found by the scale-out test, each a loss: a run waiting on flow control while a rebalance went by
was queued as a run of the new generation and moved the read offset past the records the recovery
would fetch again; a fetch begun before the recovery's seek delivered records past the committed
offset, and the records between, fetched again, were dropped as duplicates, their offsets counted
as a gap, and committed. Records are now delivered once and in order from where the partition was
sought to in the present generation.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from infra.internals import StreamsApp

Record = namedtuple("Record", "offset value")
PARTITION = TP("delivery-check.account-reports", 0)
COMMITTED = 25


class Queue:
    """Stands in for the worker's run queue: what was delivered, with its generation."""

    def __init__(self) -> None:
        self.runs: list[tuple[list[int], int]] = []

    async def deliver(self, tp: TP, fetched: list[Record], generation: int) -> None:
        self.runs.append(([r.offset for r in fetched], generation))


@pytest.fixture
def consumer() -> Any:
    app = StreamsApp("delivery-check", broker="kafka://127.0.0.1:1")  # built, never started
    consumer = app.consumer
    sought: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:  # the broker side of a seek: noted
        sought.append((tp, offset))

    consumer.seek, consumer.sought = seek, sought
    return consumer


def sought_here(consumer: Any, offset: int | None = COMMITTED) -> int:
    """As ``seek_to_committed`` leaves a partition: sought to ``offset`` in the present generation."""
    generation = consumer.app.consumer_generation_id
    consumer._positioned[PARTITION] = (generation, offset)
    return generation


def records(first: int, last: int) -> list[Record]:
    return [Record(offset, b"") for offset in range(first, last + 1)]


async def test_runs_are_delivered_in_order_from_the_sought_offset(consumer):
    queue, generation = Queue(), sought_here(consumer)
    await consumer._deliver_run(PARTITION, records(23, 27), queue.deliver, generation)  # 23, 24: before the seek
    await consumer._deliver_run(PARTITION, records(28, 30), queue.deliver, generation)
    assert queue.runs == [([25, 26, 27], generation), ([28, 29, 30], generation)]
    assert consumer._positioned[PARTITION] == (generation, 31)


async def test_nothing_is_delivered_before_the_partition_is_sought_in_this_generation(consumer):
    queue, generation = Queue(), sought_here(consumer)
    consumer.app.consumer_generation_id = generation + 1  # a rebalance kept the partition; no seek yet
    await consumer._deliver_run(PARTITION, records(28, 30), queue.deliver, generation + 1)
    assert queue.runs == []


async def test_a_run_from_a_position_a_seek_has_left_is_dropped_and_the_partition_sought_back(consumer):
    queue, generation = Queue(), sought_here(consumer)
    await consumer._deliver_run(PARTITION, records(28, 30), queue.deliver, generation)  # fetched before the seek
    assert queue.runs == [] and consumer.sought == [(PARTITION, COMMITTED)]
    await consumer._deliver_run(PARTITION, records(25, 30), queue.deliver, generation)
    assert queue.runs == [(list(range(25, 31)), generation)]


async def test_a_log_that_starts_later_than_the_committed_offset_is_read_from_its_start(consumer):
    queue, generation = Queue(), sought_here(consumer)
    for _ in range(2):  # retention removed 25..39: the broker answers from 40 however often it is asked
        await consumer._deliver_run(PARTITION, records(40, 42), queue.deliver, generation)
    assert queue.runs == [([40, 41, 42], generation)]
    assert consumer.sought == [(PARTITION, COMMITTED)]


async def test_a_partition_without_a_committed_offset_starts_wherever_the_log_does(consumer):
    queue, generation = Queue(), sought_here(consumer, None)
    await consumer._deliver_run(PARTITION, records(0, 2), queue.deliver, generation)
    assert queue.runs == [([0, 1, 2], generation)] and consumer._positioned[PARTITION] == (generation, 3)


async def test_a_run_held_up_by_a_rebalance_keeps_its_generation_and_moves_nothing(consumer):
    queue, generation = Queue(), sought_here(consumer)

    async def deliver_during_a_rebalance(tp: TP, fetched: list[Record], run_generation: int) -> None:
        consumer.app.consumer_generation_id = generation + 1  # the assignment, then the recovery's seek
        consumer._positioned[PARTITION] = (generation + 1, COMMITTED)
        await queue.deliver(tp, fetched, run_generation)

    await consumer._deliver_run(PARTITION, records(25, 30), deliver_during_a_rebalance, generation)
    assert queue.runs == [(list(range(25, 31)), generation)], "queued as a run of the generation it was fetched in"
    assert consumer._positioned[PARTITION] == (generation + 1, COMMITTED), "read again from the committed offset"


async def test_a_run_is_not_delivered_once_a_rebalance_began(consumer):
    queue, generation = Queue(), sought_here(consumer)
    consumer.suspend_flow.set()
    await consumer._deliver_run(PARTITION, records(25, 30), queue.deliver, generation)
    assert queue.runs == [] and consumer._positioned[PARTITION] == (generation, COMMITTED)


async def test_a_stale_run_is_sought_back_again_after_runs_were_delivered(consumer):
    """The note of a seek back lasts until the next delivered run: the same stale start later (a new
    generation back at the same committed offset) is sought back again, not taken for the log's start."""
    queue, generation = Queue(), sought_here(consumer)
    await consumer._deliver_run(PARTITION, records(28, 30), queue.deliver, generation)
    await consumer._deliver_run(PARTITION, records(25, 27), queue.deliver, generation)
    generation = sought_here(consumer)  # sought to the committed offset again
    await consumer._deliver_run(PARTITION, records(28, 30), queue.deliver, generation)
    assert consumer.sought == [(PARTITION, COMMITTED)] * 2
    assert queue.runs == [([25, 26, 27], generation)]


async def test_a_partition_fetched_while_its_seek_was_under_way_is_sought_again(consumer, monkeypatch):
    """aiokafka seeks partition by partition while fetches go on: a run fetched after the seek but before
    it was noted is dropped, and the partition is sought again once the note is made."""
    queue, generation = Queue(), consumer.app.consumer_generation_id
    await consumer._deliver_run(PARTITION, records(25, 30), queue.deliver, generation)  # not noted yet: dropped

    async def committed_offsets(self: Any) -> dict[TP, int]:
        return {PARTITION: COMMITTED}

    monkeypatch.setattr(driver.Consumer, "seek_to_committed", committed_offsets)
    await consumer.seek_to_committed()
    assert queue.runs == [] and consumer.sought == [(PARTITION, COMMITTED)]
    await consumer._deliver_run(PARTITION, records(25, 30), queue.deliver, generation)
    assert queue.runs == [(list(range(25, 31)), generation)]
