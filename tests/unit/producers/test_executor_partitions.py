"""The executor handles every partition of a fetch at once, and commits them only once all are handled."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from producers.executor.loop import Executor


def record(partition: int, offset: int, key: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t.close-commands", partition, offset, 0, 0, key, b"{}", None, 0, 2, ())


class OneFetch:
    """A consumer whose first ``getmany`` returns ``fetched``; then nothing, and the loop stops."""

    def __init__(self, fetched: dict[TopicPartition, list[Any]], stop: asyncio.Event) -> None:
        self.fetched, self.stop = fetched, stop
        self.commits: list[dict[TopicPartition, int]] = []

    async def getmany(self, **options: Any) -> dict[TopicPartition, list[Any]]:
        fetched, self.fetched = self.fetched, {}
        if not fetched:
            self.stop.set()
        return fetched

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)


async def test_a_command_waiting_on_its_terminal_does_not_hold_another_partitions() -> None:
    """The first partition's close waits until the second partition's is handled: one partition after
    another, that never ends."""
    none: Any = None
    executor = Executor(gateways={}, ledger=none, producer=none, prefix="t")
    second_handled = asyncio.Event()
    handled: list[bytes | None] = []

    async def handle_record(record: ConsumerRecord[bytes, bytes]) -> None:
        if record.partition == 0:
            await second_handled.wait()
        else:
            second_handled.set()
        handled.append(record.key)

    async def settled() -> None:
        return None

    executor.handle_record = handle_record  # type: ignore[method-assign]
    executor.settle_unresolved = settled  # type: ignore[method-assign]
    stop = asyncio.Event()
    first, second = TopicPartition("t.close-commands", 0), TopicPartition("t.close-commands", 1)
    consumer = OneFetch({first: [record(0, 7, b"u-a")], second: [record(1, 3, b"u-b"), record(1, 4, b"u-b")]}, stop)
    await asyncio.wait_for(executor.run(consumer, stop=stop), timeout=2)  # type: ignore[arg-type]
    assert handled == [b"u-b", b"u-b", b"u-a"]
    assert consumer.commits == [{first: 8, second: 5}], "committed after every partition's commands are handled"
