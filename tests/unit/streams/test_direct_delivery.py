"""The worker's queue of runs keeps what was fetched when Faust resumes the flow.

Faust's recovery resumes the stream partitions, seeks them to their committed offsets, and only
then resumes the flow, which empties every queue in flow control's care. Runs fetched during the
seek were queued already, past the fetch position: emptied out, they were never fetched again."""

from __future__ import annotations

import faust

from infra.internals import direct_delivery


def test_a_flow_resume_does_not_empty_the_runs_queue() -> None:
    app = faust.App("direct-delivery-check", broker="kafka://127.0.0.1:1")  # built, never started
    runs_queue = app.topic("inputs", value_serializer="raw").__aiter__().queue
    stock_queue = app.topic("other", value_serializer="raw").__aiter__().queue
    direct_delivery(app, runs_queue)
    runs_queue.put_nowait("a run fetched during the seek")
    stock_queue.put_nowait("a message")
    app.flow_control.resume()
    assert runs_queue.qsize() == 1
    assert stock_queue.qsize() == 0  # what Faust does to the queues it still looks after
