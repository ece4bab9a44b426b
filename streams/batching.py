"""Batches straight from a channel's queue, without Faust's per-event stream machinery.

An agent's stream hands events over one at a time (context variables, sensors, processors and
an ack per event, and ``take()``'s buffer on top); at the worker's rates that plumbing cost more
than the rules themselves. The conductor still decodes each message into the channel's queue,
with its flow control (the queue pauses fetching when full, and is cleared on a rebalance); this
takes whatever is queued, up to ``max_events``, waiting at most ``within`` seconds for a batch to
fill once its first event is in. The caller acks the events after processing them, so offsets
are committed only past processed messages (at least once).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol


class EventQueue(Protocol):
    async def get(self) -> Any: ...

    def get_nowait(self) -> Any: ...

    def empty(self) -> bool: ...


async def batches(queue: EventQueue, *, max_events: int, within: float, poll: float = 0.002
                  ) -> AsyncIterator[list[Any]]:
    """Yield lists of 1..max_events queued items; a batch waits at most ``within`` to fill."""
    loop = asyncio.get_running_loop()
    while True:
        batch = [await queue.get()]
        deadline = loop.time() + within
        while True:
            while len(batch) < max_events and not queue.empty():
                batch.append(queue.get_nowait())
            remaining = deadline - loop.time()
            if len(batch) >= max_events or remaining <= 0:
                break
            await asyncio.sleep(min(poll, remaining))
        yield batch
