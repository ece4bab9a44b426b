"""`publish-trade` is a door: it publishes only what is strictly valid and names what reconguard
knows (a user in `users`; for a platform close, an approval on the expected-trades topic)."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from infra.kafka import make_consumer
from reconguard.cli import app
from schemas import decode
from schemas.topics import EXPECTED_TRADES
from tests.support.events import add_users

pytestmark = pytest.mark.integration

APPROVAL = {"signal_id": "s-door-1", "approval_id": "a-door-1", "user_id": "u-door", "symbol": "EURUSD",
            "direction": "buy", "volume": 0.1, "entry_price": 1.0841}
CLOSE = {"signal_id": "s-door-1", "approval_id": "a-door-1", "user_id": "u-door"}


@pytest.fixture
def env(settings, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RECONGUARD_TOPIC_PREFIX", settings.topic_prefix)
    asyncio.run(add_users(settings.database_url, "u-door"))
    return settings


def _publish(payload: dict | str):
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return CliRunner().invoke(app, ["publish-trade", "-"], input=text)


def _published(env) -> list:
    async def read() -> list:
        consumer = make_consumer(EXPECTED_TRADES.name(env.topic_prefix), bootstrap_servers=env.kafka_bootstrap_servers,
                                 group_id=None)
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=3000)
            return [decode(EXPECTED_TRADES, m.value).payload for ms in batches.values() for m in ms]
        finally:
            await consumer.stop()

    return asyncio.run(read())


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        pytest.param(APPROVAL | {"user_id": "u-stranger"}, "no user 'u-stranger'", id="a trade for an unknown user"),
        pytest.param(CLOSE | {"approval_id": "a-never"}, "no approval 'a-never'", id="a close of an unknown approval"),
        pytest.param(APPROVAL | {"volume": "0.1"}, "valid number", id="a volume as text"),
        pytest.param(APPROVAL | {"entry_price": True}, "valid number", id="a price as a boolean"),
    ],
)
def test_refused_before_anything_is_published(env, payload, says):
    refused = _publish(payload)
    assert refused.exit_code == 2 and says in " ".join(refused.output.split()), refused.output
    assert not [p for p in _published(env) if p.approval_id in {"a-never"} or p.user_id == "u-stranger"]


def test_a_close_of_a_published_approval_goes_through(env):
    assert _publish(APPROVAL).exit_code == 0
    closed = _publish(CLOSE)
    assert closed.exit_code == 0, closed.output
    kinds = [type(p).__name__ for p in _published(env) if p.approval_id == "a-door-1"]
    assert kinds == ["TradeApproved", "TradeClosedByPlatform"]
