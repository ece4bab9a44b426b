"""The projector's write pipeline: the next batch is decoded while the last one is written.

The projector here is a stand-in that records what happens when (decoding and writing are
the projector's own, tested against the real broker and Postgres in the integration tests);
what is tested is the order the pipeline keeps.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from projections.projector import BatchOutcome, Prepared, WritePipeline

TP = TopicPartition("t", 0)


class Recorder:
    """Prepares and writes batches of fake messages, noting each step."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.release: dict[int, asyncio.Event] = {}

    def prepare_into(self, prepared: Prepared, tp: TopicPartition, messages: list[Any]) -> None:
        self.log.append(f"decode {messages[0].offset}-{messages[-1].offset}")
        prepared.received += len(messages)
        prepared.next_offsets[tp] = messages[-1].offset + 1

    async def write(self, prepared: Prepared) -> BatchOutcome:
        end = prepared.next_offsets[TP]
        self.log.append(f"write to {end} begins")
        await self.release.setdefault(end, asyncio.Event()).wait()
        self.log.append(f"write to {end} committed")
        return BatchOutcome(received=prepared.received, next_offsets=prepared.next_offsets)


class Message:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def batch(first: int, count: int) -> dict[TopicPartition, list[Any]]:
    return {TP: [Message(o) for o in range(first, first + count)]}


async def test_the_next_batch_is_decoded_while_the_last_is_written_and_writes_stay_in_order() -> None:
    recorder, written = Recorder(), []

    async def on_written(outcome: BatchOutcome) -> None:
        recorder.log.append(f"written to {outcome.next_offsets[TP]}")
        written.append(outcome.next_offsets[TP])

    pipeline = WritePipeline(recorder, written=on_written)  # type: ignore[arg-type]
    await pipeline.put(batch(0, 10))
    second = asyncio.ensure_future(pipeline.put(batch(10, 300)))
    await asyncio.sleep(0.01)
    assert not second.done(), "the second batch waits for the first write before starting its own"
    recorder.release[10].set()
    await second
    recorder.release.setdefault(310, asyncio.Event()).set()
    await pipeline.drain()
    assert written == [10, 310]
    log = recorder.log
    assert log.index("write to 10 begins") < log.index("decode 10-259") < log.index("write to 10 committed"), \
        "the second batch was decoded while the first was being written"
    assert log.index("written to 10") < log.index("write to 310 begins"), "one write at a time, in order"
    assert log[-1] == "written to 310"


async def test_idle_finishes_the_write_in_flight_and_holds_back_the_next() -> None:
    recorder = Recorder()
    done: list[int] = []

    async def on_written(outcome: BatchOutcome) -> None:
        done.append(outcome.next_offsets[TP])

    pipeline = WritePipeline(recorder, written=on_written)  # type: ignore[arg-type]
    await pipeline.put(batch(0, 5))
    recorder.release[5] = asyncio.Event()
    asyncio.get_running_loop().call_later(0.02, recorder.release[5].set)
    async with pipeline.idle():
        assert done == [5], "the write in flight is committed before idle() is entered"
        late = asyncio.ensure_future(pipeline.put(batch(5, 5)))
        await asyncio.sleep(0.01)
        assert "write to 10 begins" not in recorder.log, "no write starts while idle"
    recorder.release.setdefault(10, asyncio.Event()).set()
    await late
    await pipeline.drain()
    assert done == [5, 10]


class StatementByStatement(Recorder):
    """A write that takes several round trips, as COPY, INSERT, progress and COMMIT do."""

    async def write(self, prepared: Prepared) -> BatchOutcome:
        for statement in ("COPY", "INSERT", "COMMIT"):
            self.log.append(statement)
            await asyncio.sleep(0)  # the database works; the event loop is free
        return BatchOutcome(received=prepared.received, next_offsets=prepared.next_offsets)


async def test_decoding_lets_the_write_in_flight_send_its_next_statement() -> None:
    recorder = StatementByStatement()

    async def on_written(outcome: BatchOutcome) -> None:
        recorder.log.append("written")

    pipeline = WritePipeline(recorder, written=on_written)  # type: ignore[arg-type]
    await pipeline.put(batch(0, 1))
    await pipeline.put(batch(1, 3 * WritePipeline.CHUNK))
    first_write = recorder.log[:recorder.log.index("written")]
    decoding = [i for i, step in enumerate(first_write) if step.startswith("decode") and step != "decode 0-0"]
    statements = [i for i, step in enumerate(first_write) if step in ("COPY", "INSERT", "COMMIT")]
    assert len(decoding) == 3 and decoding[0] < statements[1] < decoding[-1], \
        f"the first write's statements go out between the second batch's chunks: {first_write}"
    await pipeline.drain()
