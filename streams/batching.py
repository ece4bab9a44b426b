"""Batches straight from a channel's queue, without Faust's per-event stream machinery.

An agent's stream hands events over one at a time (context variables, sensors, processors and
an ack per event, and ``take()``'s buffer on top); at the worker's rates that plumbing cost more
than the rules themselves. The fetch loop queues runs of records on the channel's queue, with
its flow control (the queue pauses fetching when full); this takes whatever is queued, up to about ``max_events`` (an item counts ``size(item)`` events),
waiting at most ``within`` seconds for a batch to fill once its first item is in. The caller
acks the items after processing them, so offsets are committed only past processed records
(at least once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol


class EventQueue(Protocol):
    async def get(self) -> Any: ...

    def get_nowait(self) -> Any: ...

    def empty(self) -> bool: ...


async def batches(queue: EventQueue, *, max_events: int, within: float, poll: float = 0.002,
                  size: Callable[[Any], int] = lambda item: 1) -> AsyncIterator[list[Any]]:
    """Yield lists of queued items; a batch stops taking items once it holds ``max_events``
    events, once a ``poll`` passed with nothing new queued (the items of a fetch are queued
    together: a batch that waited the whole window for a trickle held its first item that much
    longer), and at most ``within`` after its first item."""
    loop = asyncio.get_running_loop()
    while True:
        first = await queue.get()
        batch, events = [first], size(first)
        deadline = loop.time() + within
        taken = True
        while True:
            while events < max_events and not queue.empty():
                item = queue.get_nowait()
                batch.append(item)
                events += size(item)
                taken = True
            remaining = deadline - loop.time()
            if events >= max_events or remaining <= 0 or not taken:
                break
            taken = False
            await asyncio.sleep(min(poll, remaining))
        yield batch


class Pacer:
    """Hands the event loop back once ``slice`` seconds of work have run since it last had it.

    A batch of a few hundred events runs through the rules without ever suspending (a send
    returns at once while the producer's buffer has room), for tens of milliseconds at load:
    meanwhile the sweep cannot fire a deadline, the producer's sender cannot send what the batch
    already published, and the offset commit waits. ``await pace()`` after each event bounds that."""

    def __init__(self, *, slice: float = 0.005, clock: Callable[[], float] = time.monotonic) -> None:
        self.slice, self.clock = slice, clock
        self.since = clock()

    async def pace(self) -> None:
        if self.clock() - self.since >= self.slice:
            await asyncio.sleep(0)
            self.since = self.clock()
