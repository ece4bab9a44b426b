"""An account lock as each interface shows it, and the unlock each one asks for (real broker and Postgres).

The lock rows are put in ``account_lock_events`` as the projector writes them; the unlock commands
are read back from the lock-commands topic, where the worker takes them (tested end to end in
tests/integration/e2e/test_locks_and_bindings.py).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest
from aiokafka import TopicPartition
from sqlalchemy import insert
from typer.testing import CliRunner

from infra.db import make_engine, make_sessionmaker
from infra.kafka import make_consumer
from infra.settings import Settings
from infra.tables import AccountLockEvent
from reconguard.cli import app as cli
from reconguard.telegram.status import status_reply
from schemas import decode, utcnow
from schemas.topics import LOCK_COMMANDS
from tests.integration.interfaces.support import People, seed_people, served_api
from tests.support.browser import ARTIFACTS, CHROMIUM
from tests.support.browser import chromium as _chromium

pytestmark = pytest.mark.integration

OWNER_CHAT = 880_001


@pytest.fixture(scope="module")
def people(settings: Settings) -> People:
    return asyncio.run(seed_people(settings.database_url, tag="locks", chat_ids={"owner": OWNER_CHAT}))


@pytest.fixture(scope="module")
def lock_id(settings: Settings, people: People) -> uuid.UUID:
    """The owner's account, locked a minute ago by a drawdown liquidation."""
    lock = uuid.uuid4()

    async def insert_lock() -> None:
        engine = make_engine(settings.database_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(insert(AccountLockEvent), [{
                    "id": lock, "user_id": people.owner, "event_type": "AccountLocked", "lock_id": lock,
                    "kind": "drawdown", "ends": "admin_unlock",
                    "reason": "account locked after the drawdown guard's liquidation",
                    "created_at": utcnow() - timedelta(minutes=1)}])
        finally:
            await engine.dispose()

    asyncio.run(insert_lock())
    return lock


@pytest.fixture(scope="module")
def api(settings: Settings, people: People, lock_id: uuid.UUID):
    with served_api(settings) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


def unlock_commands(settings: Settings) -> list:
    async def read() -> list:
        consumer = make_consumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
        await consumer.start()
        try:
            name = LOCK_COMMANDS.name(settings.topic_prefix)
            partitions = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or range(4)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            batches = await consumer.getmany(*partitions, timeout_ms=2000)
            return [decode(LOCK_COMMANDS, r.value) for records in batches.values() for r in records]
        finally:
            await consumer.stop()

    return asyncio.run(read())


@pytest.mark.parametrize(("who", "expected"), [("anonymous", 401), ("owner", 200), ("other", 403), ("admin", 200)])
def test_the_lock_is_read_by_its_owner_and_admins_only(api, people, lock_id, who, expected):
    response = api.get(f"/users/{people.owner}/lock", headers=people.headers(None if who == "anonymous" else who))
    assert response.status_code == expected
    if expected == 200:
        body = response.json()
        assert body["locked"] is True and body["lock"]["lock_id"] == str(lock_id)
        assert (body["lock"]["kind"], body["lock"]["ends"]) == ("drawdown", "admin_unlock")


def test_locks_in_force_list_what_the_caller_may_see(api, people):
    def locked(who: str) -> set[str]:
        return {lock["user_id"] for lock in api.get("/locks", headers=people.headers(who)).json()}

    assert locked("owner") == {people.owner} and locked("admin") >= {people.owner}
    assert locked("other") == set(), "another trader sees no one else's lock"


def test_only_an_admin_unlocks_and_the_command_names_who_and_why(settings, api, people, lock_id):
    for who in ("owner", "other"):
        assert api.post(f"/users/{people.owner}/unlock", json={"reason": "please"},
                        headers=people.headers(who)).status_code == 403
    assert api.post(f"/users/{people.owner}/unlock", json={}, headers=people.headers("admin")).status_code == 422
    assert api.post(f"/users/{people.other}/unlock", json={"reason": "r"},
                    headers=people.headers("admin")).status_code == 409, "not locked"
    accepted = api.post(f"/users/{people.owner}/unlock", json={"reason": "loss reviewed"},
                        headers=people.headers("admin"))
    assert accepted.status_code == 202 and accepted.json()["lock_id"] == str(lock_id)
    commands = [c for c in unlock_commands(settings) if str(c.event_id) == accepted.json()["command_id"]]
    assert [(c.account_id, c.payload.requested_by, c.payload.reason) for c in commands] == [
        (people.owner, people.admin, "loss reviewed")]


def test_the_command_line_unlock_checks_the_admin_and_the_lock(settings, people, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RECONGUARD_TOPIC_PREFIX", settings.topic_prefix)
    runner = CliRunner()
    listed = runner.invoke(cli, ["accounts", "locks"])
    assert listed.exit_code == 0 and people.owner in listed.output

    not_admin = runner.invoke(cli, ["accounts", "unlock", people.owner, "--by", people.other, "--reason", "r"])
    assert not_admin.exit_code == 2 and "not an admin" in not_admin.output
    not_locked = runner.invoke(cli, ["accounts", "unlock", people.other, "--by", people.admin, "--reason", "r"])
    assert not_locked.exit_code == 2 and "not locked" in not_locked.output

    done = runner.invoke(cli, ["accounts", "unlock", people.owner, "--by", people.admin, "--reason", "by phone"])
    assert done.exit_code == 0, done.output
    assert any((c.payload.requested_by, c.payload.reason) == (people.admin, "by phone")
               for c in unlock_commands(settings))


def test_telegram_status_says_the_account_is_locked(settings, people, lock_id):
    async def reply() -> str:
        engine = make_engine(settings.database_url)
        try:
            return await status_reply(sessions=make_sessionmaker(engine), chat_id=OWNER_CHAT)
        finally:
            await engine.dispose()

    text = asyncio.run(reply())
    assert "Locked" in text and "until an admin unlocks it" in text and "drawdown" in text


@pytest.mark.parametrize("command", ["locks", "unlock"])
def test_the_accounts_commands_explain_themselves_with_an_example(command):
    result = CliRunner().invoke(cli, ["accounts", command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`)")
def test_the_dashboard_shows_which_account_is_locked(api, people, lock_id, tmp_path):
    url = f"{str(api.base_url).rstrip('/')}/dashboard#token={people.tokens['admin']}"
    dom = _chromium(url, tmp_path / "profile", "--dump-dom")
    ARTIFACTS.mkdir(exist_ok=True)
    _chromium(url, tmp_path / "profile-shot", f"--screenshot={ARTIFACTS / 'dashboard-lock.png'}")
    owner = dom.split(f'data-user="{people.owner}"', 1)[1].split("</article>", 1)[0]
    other = dom.split(f'data-user="{people.other}"', 1)[1].split("</article>", 1)[0]
    assert 'data-locked="true"' in owner and "until an admin unlocks it" in owner, owner[:1000]
    assert 'data-locked="false"' in other and "Trading: open" in other
