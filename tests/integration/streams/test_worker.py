"""The streams worker end to end on the real broker: reports in, decisions out.

The worker runs as a child process (as `reconguard run` runs it) on this module's topics; each
test uses its own accounts. Guard levels come from the ``users`` table of this module's database.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition

from infra.kafka import fetched_end_offsets, make_consumer, publish
from infra.settings import Settings
from schemas import derived, utcnow
from schemas.common import DealReason
from schemas.results import PositionClosed
from schemas.topics import ACCOUNT_REPORTS, CLOSE_RESULTS, EXPECTED_TRADES, POSITION_REPORTS
from streams.app import app_id
from tests.support.streams_worker import Outputs, account_id, add_account, for_account, opened_now
from tests.support.waiting import eventually
from tests.unit.streams import builders as b

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def accounts(settings: Settings) -> dict[str, str]:
    # "restart": a grace longer than a restart of the worker takes on a busy machine (about 8 s at load 10)
    names = {"drawdown": 2, "restart": 15, "sync": 2, "divergence": 2, "probe": 2}
    ids = {name: account_id(name) for name in names}

    async def add_all() -> None:
        for name, grace in names.items():
            await add_account(settings.database_url, ids[name], grace=grace)

    asyncio.run(add_all())
    return ids


async def breach(producer: Any, outputs: Outputs, prefix: str, account: str) -> None:
    """Three held positions, then a peak (two trusted readings confirm it) and two confirming readings
    beyond the critical level.

    The readings go out once the worker has read the positions (their divergences show it): it reads
    its topics in no fixed order between them, and a breach with nothing open raises nothing."""
    held = b.positions(b.position(1001, profit_gbp=-400), b.position(1002, profit_gbp=-300),
                       b.position(1003, symbol="XAUUSD", profit_gbp=-500))
    await publish(producer, POSITION_REPORTS, prefix, for_account(held, account))
    await outputs.wait_for(account, "DivergenceDetected", what="the positions to be read")
    start = utcnow()
    for i, equity in enumerate((10_000, 10_000, 8_900, 8_800)):
        reading = for_account(b.account(equity, t=0), account, start + timedelta(milliseconds=50 * (i + 1)))
        await publish(producer, ACCOUNT_REPORTS, prefix, reading)


async def test_a_divergence_reaches_the_reconciliation_topic_with_its_reason(settings, producer, outputs, accounts):
    account, prefix = accounts["divergence"], settings.topic_prefix
    await publish(producer, EXPECTED_TRADES, prefix, for_account(b.approved(ticket=1001), account))
    half = b.positions(opened_now(b.position(1001, volume=0.05)))
    detected = await outputs.wait_for(account, "DivergenceDetected", polling=lambda: publish(
        producer, POSITION_REPORTS, prefix, for_account(half, account)))
    assert [d.payload.divergence_reason.value for d in detected] == ["volume_mismatch"]
    gapped = b.positions(deals=(b.deal(1001, reason=DealReason.SL, price=1.08),))
    await publish(producer, POSITION_REPORTS, prefix, for_account(gapped, account))
    detected = await outputs.wait_for(account, "DivergenceDetected", count=2)
    gap = detected[1].payload
    assert (gap.divergence_reason.value, gap.close_reason.value, gap.matched, gap.status.value) == (
        "gap", "sl", 0, "divergence")
    resolved = await outputs.wait_for(account, "DivergenceResolved")
    assert resolved[0].payload.divergence_reason.value == "volume_mismatch"


async def test_a_critical_breach_warns_at_once_and_closes_after_the_grace(settings, producer, outputs, accounts):
    account = accounts["drawdown"]
    await breach(producer, outputs, settings.topic_prefix, account)
    warning = (await outputs.wait_for(account, "GuardAlertRaised", timeout=10))[0]
    assert (warning.payload.alert_type.value, warning.payload.action_taken.value) == (
        "drawdown_critical", "warning_sent")
    assert "positions close in 2 s" in warning.payload.message
    reading_at = datetime.fromisoformat(warning.payload.details["reading_at"])
    assert (warning.recorded_at - reading_at).total_seconds() < 1.0, "the warning must come at once"
    commands = await outputs.wait_for(account, "ClosePosition", count=2, timeout=15)
    delay = (min(c.recorded_at for c in commands) - reading_at).total_seconds()
    assert 2.0 <= delay <= 3.0, f"close commands came {delay:.2f}s after the breach (grace 2 s)"
    assert sorted((c.payload.symbol, c.payload.tickets) for c in commands) == [
        ("EURUSD", (1001, 1002)), ("XAUUSD", (1003,))]
    assert {c.payload.alert_id for c in commands} == {warning.event_id}, "the closes belong to the warning's alert"
    ordered = (await outputs.wait_for(account, "GuardAlertRaised", count=2))[1].payload
    assert (ordered.alert_id, ordered.status, ordered.action_taken.value, ordered.positions_closed_count) == (
        warning.event_id, "ordered", "warning_sent", 0), "ordered is not closed"
    # The executor's answers: the alert says what they confirmed, with the realised P&L.
    for command in commands:
        for ticket in command.payload.tickets:
            await publish(producer, CLOSE_RESULTS, settings.topic_prefix, closed_by(command, ticket, pnl_gbp=-150.0))
    confirmed = (await outputs.wait_for(account, "GuardAlertRaised", count=3))[2].payload
    assert (confirmed.alert_id, confirmed.status, confirmed.action_taken.value, confirmed.positions_closed_count,
            confirmed.total_loss_gbp, confirmed.revision) == (warning.event_id, "executed", "positions_closed", 3,
                                                            450.0, 2)
    assert confirmed.executed_at is not None


def closed_by(command: Any, ticket: int, *, pnl_gbp: float) -> Any:
    c = command.payload
    result = PositionClosed(command_id=command.event_id, user_id=c.user_id, ticket=ticket, symbol=c.symbol,
                            reason=c.reason, retcode=10009, price=1.0, pnl=pnl_gbp, pnl_gbp=pnl_gbp, attempts=1,
                            alert_id=c.alert_id)
    return derived(result, cause=command, rule=f"close/{ticket}", occurred_at=utcnow())


async def test_a_sync_error_is_indeterminate_and_closes_nothing(settings, producer, outputs, accounts):
    account, prefix = accounts["sync"], settings.topic_prefix
    await publish(producer, EXPECTED_TRADES, prefix, for_account(b.approved(ticket=1001), account))
    held = b.positions(opened_now(b.position(1001)))
    await outputs.wait_for(account, "PositionMatched", polling=lambda: publish(
        producer, POSITION_REPORTS, prefix, for_account(held, account)))
    start = utcnow()
    await publish(producer, ACCOUNT_REPORTS, prefix, for_account(b.account(10_000, t=0), account, start))
    for i in range(1, 4):  # the terminal disconnects: sync errors and a reading of zero equity
        await publish(producer, ACCOUNT_REPORTS, prefix,
                      for_account(b.sync_failed(t=0), account, start + timedelta(milliseconds=100 * i)))
    await publish(producer, ACCOUNT_REPORTS, prefix,
                  for_account(b.account(0, t=0), account, start + timedelta(milliseconds=500)))
    indeterminate = await outputs.wait_for(account, "ReconciliationIndeterminate")
    assert (indeterminate[0].payload.matched, indeterminate[0].payload.status.value) == (2, "failed")
    settle = time.monotonic() + 3
    while time.monotonic() < settle:  # nothing may follow: no close, no divergence, no alert
        await outputs.read()
    assert {e.event_type for e in outputs.of(account)} == {
        "PositionMatched", "ReconciliationIndeterminate", "AccountAssessed"}
    snapshots = [e.payload for e in outputs.of(account, "AccountAssessed")]
    assert {s.equity_gbp for s in snapshots} == {10_000}, "the zero-equity reading of a disconnect is rejected"
    assert any(s.sync_error for s in snapshots)


async def test_a_restart_inside_the_grace_still_closes_once_and_on_time(settings, producer, outputs, worker,
                                                                         accounts):
    account = accounts["restart"]
    await breach(producer, outputs, settings.topic_prefix, account)
    warning = (await outputs.wait_for(account, "GuardAlertRaised", timeout=10))[0]
    deadline = datetime.fromisoformat(warning.payload.details["deadline"])
    worker.stop()
    assert not outputs.of(account, "ClosePosition")
    worker.start()
    commands = await outputs.wait_for(account, "ClosePosition", count=2, timeout=30)
    fired_at = min(c.recorded_at for c in commands)
    lateness = (fired_at - deadline).total_seconds()
    assert 0 <= lateness <= 1.5, f"closed {lateness:.2f}s after the deadline"
    await outputs.wait_for(account, "GuardAlertRaised", count=2)
    settle = time.monotonic() + 3
    while time.monotonic() < settle:
        await outputs.read()
    assert len({c.event_id for c in outputs.of(account, "ClosePosition")}) == 2


async def test_a_malformed_message_is_dead_lettered_and_the_worker_keeps_going(settings, producer, outputs,
                                                                               accounts):
    account = account_id("garbage")
    await producer.send_and_wait(ACCOUNT_REPORTS.name(settings.topic_prefix), b"{not json", key=account.encode())
    letters = await outputs.wait_for(account, "MessageDeadLettered")
    assert "malformed JSON" in letters[0].payload.reason
    after = account_id("after-garbage")
    await publish(producer, ACCOUNT_REPORTS, settings.topic_prefix, for_account(b.account(10_000, t=0), after))
    assessed = await outputs.wait_for(after, "AccountAssessed")
    assert assessed[0].payload.equity_gbp == 10_000


async def test_processed_inputs_are_committed(settings, producer, outputs, accounts):
    """Offsets follow the work: once a report's outputs are out, the group's offset passes it."""
    account = account_id("committed")
    await publish(producer, ACCOUNT_REPORTS, settings.topic_prefix, for_account(b.account(10_000, t=0), account))
    await outputs.wait_for(account, "AccountAssessed")
    topic = ACCOUNT_REPORTS.name(settings.topic_prefix)
    ends = await fetched_end_offsets(settings.kafka_bootstrap_servers,
                                     [TopicPartition(topic, p) for p in range(settings.topic_partitions)])

    async def committed() -> dict[TopicPartition, int]:
        # The group's consumer, not subscribed: it reads the group's offsets without joining it.
        reader = make_consumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=app_id(settings))
        await reader.start()
        try:
            return {tp: await reader.committed(tp) or 0 for tp in ends}
        finally:
            await reader.stop()

    await eventually(committed, until=lambda found: all(found.get(tp, 0) >= end for tp, end in ends.items()),
                     timeout=15, what="the worker's committed offsets to reach the end of the account reports")
