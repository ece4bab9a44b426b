"""The worker's door for the platform's input: a trade for a user reconguard does not know, or a
platform close of an approval it never saw, goes to the dead-letter topic with the reason, and
changes nothing (no divergence on anyone's account)."""

from __future__ import annotations

import asyncio

import pytest

from infra.kafka import publish
from infra.settings import Settings
from schemas import observed, utcnow
from schemas.platform import TradeApproved, TradeClosedByPlatform
from schemas.topics import EXPECTED_TRADES
from tests.support.streams_worker import account_id, add_account

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def accounts(settings: Settings) -> dict[str, str]:
    ids = {"probe": account_id("door-probe"), "trader": account_id("door-trader")}

    async def add_all() -> None:
        for account in ids.values():
            await add_account(settings.database_url, account, grace=2)

    asyncio.run(add_all())
    return ids


def _approval(user: str, approval: str) -> TradeApproved:
    return TradeApproved(signal_id=f"s-{approval}", approval_id=approval, user_id=user, symbol="EURUSD",
                         direction="buy", volume=0.1, entry_price=1.08)


async def test_a_trade_for_an_unknown_user_is_dead_lettered(settings, producer, outputs):
    stranger = account_id("stranger")
    await publish(producer, EXPECTED_TRADES, settings.topic_prefix,
                  observed(_approval(stranger, "a-1"), account_id=stranger, occurred_at=utcnow()))
    (letter,) = await outputs.wait_for(stranger, "MessageDeadLettered")
    assert letter.payload.consumer == "streams" and f"unknown user {stranger!r}" in letter.payload.reason


async def test_a_close_of_an_unknown_approval_is_dead_lettered(settings, producer, outputs, accounts):
    trader = accounts["trader"]
    close = TradeClosedByPlatform(signal_id="s-x", approval_id="a-never", user_id=trader)
    await publish(producer, EXPECTED_TRADES, settings.topic_prefix,
                  observed(close, account_id=trader, occurred_at=utcnow()))
    (letter,) = await outputs.wait_for(trader, "MessageDeadLettered")
    assert "unknown approval 'a-never'" in letter.payload.reason
    assert outputs.of(trader, "DivergenceDetected") == []
