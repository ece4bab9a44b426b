"""Batches taken straight from a channel's queue: whatever is queued, up to the maximum, waiting briefly to fill."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.batching import Pacer, batches


async def _first(queue: asyncio.Queue[Any], **options: Any) -> list[Any]:
    it = batches(queue, **options)  # type: ignore[arg-type]
    try:
        return await asyncio.wait_for(anext(it), timeout=2)
    finally:
        await it.aclose()


async def test_a_batch_takes_what_is_queued_up_to_the_maximum() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(7):
        queue.put_nowait(i)
    assert await _first(queue, max_events=5, within=0.5) == [0, 1, 2, 3, 4]
    assert queue.qsize() == 2


async def test_a_batch_that_keeps_filling_stops_at_its_window() -> None:
    """Every poll finds something new (an item each 5 ms, polls of 10 ms): the window ends the batch."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(0)
    loop = asyncio.get_running_loop()
    for i in range(1, 101):
        loop.call_later(0.005 * i, queue.put_nowait, i)
    batch = await _first(queue, max_events=1000, within=0.1, poll=0.01)
    assert batch == list(range(len(batch))), "in order, none skipped"
    assert 2 < len(batch) < 101, "more than the first poll's, not the whole stream"


async def test_a_batch_stops_once_a_poll_passes_with_nothing_new() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(1)
    loop = asyncio.get_running_loop()
    loop.call_soon(queue.put_nowait, 2)  # queued during the first poll: taken, and the batch waits one more
    loop.call_later(0.05, queue.put_nowait, 3)
    started = loop.time()
    assert await _first(queue, max_events=10, within=0.5, poll=0.01) == [1, 2]
    assert loop.time() - started < 0.045, "not the whole window"


async def test_a_batch_starts_with_the_first_event_however_late_it_comes() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    asyncio.get_running_loop().call_later(0.05, queue.put_nowait, 9)
    assert await _first(queue, max_events=10, within=0) == [9]


async def test_a_batch_counts_the_events_in_each_item_against_its_maximum() -> None:
    queue: asyncio.Queue[list[int]] = asyncio.Queue()
    for run in ([1, 2, 3], [4, 5], [6], [7, 8]):
        queue.put_nowait(run)
    assert await _first(queue, max_events=5, within=0.5, size=len) == [[1, 2, 3], [4, 5]]
    assert queue.qsize() == 2


async def test_work_paced_hands_the_loop_back_once_its_slice_has_run() -> None:
    clock = [0.0]
    pacer = Pacer(slice=0.005, clock=lambda: clock[0])
    ran: list[str] = []
    asyncio.get_running_loop().call_soon(ran.append, "timer")
    clock[0] = 0.004
    await pacer.pace()
    assert ran == [], "within the slice: no yield"
    clock[0] = 0.006
    await pacer.pace()
    assert ran == ["timer"], "past the slice: what waited has run"
    assert pacer.since == 0.006, "the next slice starts at the yield"
