"""``make run``'s demo, end to end on the real broker and Postgres: every ``positions_closed`` alert
row's count and loss equal the sum of its close results in ``reconciliation_logs``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from infra.settings import Settings
from producers.demo.script import default_script
from producers.demo.service import demo_broker
from tests.integration.e2e.alerts import assert_confirmed_alerts_match_close_records
from tests.integration.e2e.pipeline import Pipeline
from tests.integration.e2e.test_pipeline import UNSETTLED_GUARD_ALERTS

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def demo(settings: Settings) -> AsyncIterator[Pipeline]:
    running = Pipeline(settings, broker=demo_broker(), steps=default_script())
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def test_the_demos_confirmed_alerts_equal_their_close_results(demo: Pipeline) -> None:
    await demo.wait_for_rows(
        "SELECT id FROM drawdown_alerts WHERE action_taken = 'positions_closed'", count=2, timeout=240,
        what="the demo's liquidation and its market-guard close, confirmed")
    await demo.wait_for(lambda: demo.rows(UNSETTLED_GUARD_ALERTS), until=lambda rows: rows == [], timeout=60,
                        what="every guard alert of the demo settled")
    assert await assert_confirmed_alerts_match_close_records(demo) >= 2


async def test_the_demos_deposit_and_withdrawal_raise_no_alert(demo: Pipeline) -> None:
    """alice deposits 2 000 at 48 s and withdraws 1 800 (15 % of her equity) at 66 s, positions open, on
    a broker at UTC+2/UTC+3: not a loss, so no guard alert of any kind, however loaded the machine."""
    await demo.wait_for_rows(
        "SELECT id FROM drawdown_alerts WHERE action_taken = 'positions_closed'", count=2, timeout=240,
        what="the demo's liquidation and its market-guard close (both after the withdrawal)")
    withdrawn = ("SELECT d FROM (SELECT balance_gbp - lag(balance_gbp) OVER (ORDER BY created_at) AS d "
                 "FROM position_snapshots WHERE user_id = 'u-alice') s WHERE d < -1700")
    await demo.wait_for_rows(withdrawn, count=1, timeout=60, what="alice's withdrawal seen by the guard")
    assert await demo.rows("SELECT alert_type, drawdown_percent FROM drawdown_alerts WHERE user_id = 'u-alice'") == []
