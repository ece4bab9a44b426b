"""The command line as an operator uses it, against the real broker and Postgres."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from typer.testing import CliRunner

from infra.dburl import plain_url
from infra.kafka import make_consumer
from reconguard.cli import app
from schemas import decode
from schemas.topics import EXPECTED_TRADES
from tests.support.events import add_users

runner = CliRunner()


@pytest.fixture
def env(settings, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RECONGUARD_TOPIC_PREFIX", settings.topic_prefix)
    return settings


def _invoke(*args: str, stdin: str | None = None):
    return runner.invoke(app, list(args), input=stdin)


def test_every_command_explains_itself_with_an_example():
    commands = ["run", "projector", "poller", "executor", "worker", "api", "telegram", "publish-trade", "migrate",
                "docs", "replay", "tail"]
    for command in commands:
        result = _invoke(command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, command
    for command in ["add", "role", "telegram", "token", "revoke", "list"]:
        result = _invoke("users", command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, command


def test_a_single_service_without_servers_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("RECONGUARD_DATA_DIR", str(tmp_path))
    result = _invoke("tail", "alerts")
    assert result.exit_code == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in result.output and "reconguard run" in result.output


def test_users_tokens_are_shown_once_and_stored_hashed(env):
    assert _invoke("users", "add", "u-cli", "--mt5-login", "7001", "--mt5-server", "Demo", "--critical",
                   "12").exit_code == 0
    issued = _invoke("users", "token", "u-cli", "--name", "laptop")
    assert issued.exit_code == 0
    token = issued.output.strip().splitlines()[-1]
    listing = _invoke("users", "list")
    assert "u-cli" in listing.output and token not in listing.output

    async def stored() -> list[str]:
        connection = await asyncpg.connect(plain_url(env.database_url))
        try:
            return [r["token_hash"] for r in await connection.fetch(
                "SELECT token_hash FROM api_tokens WHERE user_id = 'u-cli'")]
        finally:
            await connection.close()

    hashes = asyncio.run(stored())
    assert len(hashes) == 1 and token not in hashes[0] and len(hashes[0]) == 64
    assert _invoke("users", "role", "u-nobody", "admin").exit_code == 2


def test_publish_trade_puts_the_approval_on_the_topic_and_refuses_bad_input(env):
    asyncio.run(add_users(env.database_url, "u-alice"))
    approval = {"signal_id": "s-cli-1", "approval_id": "a-cli-1", "user_id": "u-alice", "symbol": "EURUSD",
                "direction": "buy", "volume": 0.1, "entry_price": 1.0841, "stop_loss": 1.08}
    published = _invoke("publish-trade", "-", stdin=json.dumps(approval))
    assert published.exit_code == 0, published.output
    refused = _invoke("publish-trade", "-", stdin=json.dumps(approval | {"stop_loss": 1.09}))
    assert refused.exit_code == 2 and "not a valid approved trade" in refused.output

    async def on_the_topic() -> list:
        consumer = make_consumer(EXPECTED_TRADES.name(env.topic_prefix),
                                 bootstrap_servers=env.kafka_bootstrap_servers, group_id=None)
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=3000)
            return [decode(EXPECTED_TRADES, m.value) for ms in batches.values() for m in ms]
        finally:
            await consumer.stop()

    (envelope,) = asyncio.run(on_the_topic())
    assert envelope.payload.approval_id == "a-cli-1" and envelope.account_id == "u-alice"


def test_replay_builds_a_fresh_schema_and_refuses_an_existing_one(env):
    first = _invoke("replay", "--schema", "cli_replay")
    assert first.exit_code == 0, first.output
    assert "events read" in first.output and "md5" in first.output
    again = _invoke("replay", "--schema", "cli_replay")
    assert again.exit_code == 2 and "exists" in again.output
    assert _invoke("replay", "--schema", "cli_replay", "--replace").exit_code == 0
    assert _invoke("tail", "no-such-topic").exit_code == 2
