"""Notice is real: a worker that reads a breach late still gives the owner the full grace from its
warning, records both times, and raises an operator alert when the warning went out too late."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from infra.kafka import make_consumer, publish
from infra.settings import Settings
from schemas import decode, utcnow
from schemas.decisions import AlertType
from schemas.topics import ACCOUNT_REPORTS, OPERATOR_ALERTS, POSITION_REPORTS
from tests.support.streams_worker import (
    Outputs,
    WorkerProcess,
    account_id,
    add_account,
    for_account,
    wait_until_working,
)
from tests.support.waiting import eventually
from tests.unit.streams import builders as b

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
GRACE = 3.0
LATE = 6.0  # seconds between the breaching report and the worker reading it


@pytest.fixture(scope="module")
def late_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"worker": settings.worker.model_copy(
        update={"warning_delay_alert_seconds": 2.0})})


@pytest.fixture(scope="module")
def accounts(late_settings: Settings) -> dict[str, str]:
    ids = {"late": account_id("late"), "probe": account_id("probe")}

    async def add_all() -> None:
        for account in ids.values():
            await add_account(late_settings.database_url, account, grace=GRACE)

    asyncio.run(add_all())
    return ids


@pytest.fixture(scope="module")
def worker(late_settings: Settings, accounts: dict[str, str]) -> Iterator[WorkerProcess]:
    process = WorkerProcess(late_settings)
    process.start()
    yield process
    process.stop()


async def test_a_breach_read_late_gets_the_full_notice_and_an_operator_alert(late_settings, producer, worker,
                                                                             accounts):
    account, prefix = accounts["late"], late_settings.topic_prefix
    operators = make_consumer(OPERATOR_ALERTS.name(prefix), bootstrap_servers=late_settings.kafka_bootstrap_servers,
                              group_id=None)
    await operators.start()
    try:
        async with Outputs(late_settings) as outputs:
            await wait_until_working(late_settings, producer, outputs, accounts["probe"])
            held = b.positions(b.position(1001, profit_gbp=-400), b.position(1003, symbol="XAUUSD", profit_gbp=-500))
            await publish(producer, POSITION_REPORTS, prefix, for_account(held, account, utcnow() - timedelta(
                seconds=LATE)))
            # The worker reads its topics in no fixed order between them: a breach read before the positions
            # has nothing to close and raises nothing. The positions' divergences show they were read.
            await outputs.wait_for(account, "DivergenceDetected", what="the positions to be read")
            reported = utcnow() - timedelta(seconds=LATE)  # the reports reach the worker LATE seconds after
            for i, equity in enumerate((10_000, 10_000, 8_900, 8_800)):  # a peak two readings confirm
                await publish(producer, ACCOUNT_REPORTS, prefix, for_account(
                    b.account(equity, t=0), account, reported + timedelta(milliseconds=50 * (i + 1))))
            async def critical() -> list[Any]:  # not the warning level's alert, which may come first
                await outputs.read()
                return [a for a in outputs.of(account, "GuardAlertRaised")
                        if a.payload.alert_type == AlertType.DRAWDOWN_CRITICAL]

            warning = (await eventually(critical, timeout=15, what="the critical warning"))[0]
            details = warning.payload.details
            reading_at, warning_at = (datetime.fromisoformat(details[k]) for k in ("reading_at", "warning_at"))
            deadline = datetime.fromisoformat(details["deadline"])
            assert (warning_at - reading_at).total_seconds() >= LATE - 0.5
            assert deadline == warning_at + timedelta(seconds=GRACE), "the grace runs from the warning"
            commands = await outputs.wait_for(account, "ClosePosition", count=2, timeout=20)
            notice = (min(c.recorded_at for c in commands) - warning.recorded_at).total_seconds()
            assert notice >= GRACE, f"the owner got {notice:.2f} s of notice, not {GRACE} s"
            for command in commands:  # every close records the times its notice ran from
                assert command.payload.details["warning_at"] == details["warning_at"]
                published_at = datetime.fromisoformat(command.payload.details["warning_published_at"])
                assert published_at >= warning_at

        alerts: list[Any] = []
        for _ in range(20):
            records = await operators.getmany(timeout_ms=500)
            alerts += [decode(OPERATOR_ALERTS, r.value) for rs in records.values() for r in rs]
            if any(a.account_id == account for a in alerts):
                break
        (late,) = [a for a in alerts if a.account_id == account]
        assert (late.payload.kind, late.payload.service) == ("warning_delayed", "worker")
        assert late.payload.details["delay_seconds"] >= LATE - 0.5
    finally:
        await operators.stop()
