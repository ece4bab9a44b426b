"""The Telegram service against a local Bot API server: one message per alert state a person needs
reaches its owner's chat (an escalation also every admin's) exactly once, through 429s, 5xx answers
and restarts; /status answers for the chat's own account only."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiokafka import TopicPartition

from infra.kafka import ensure_topics, make_consumer, make_producer, publish_many
from infra.settings import TelegramSettings
from reconguard.telegram.messages import NOT_LINKED
from reconguard.telegram.service import serve
from schemas import Envelope, decode, observed, utcnow
from schemas.decisions import ActionTaken, AlertType, GuardAlertRaised
from schemas.locks import AccountLocked, AccountUnlocked, LockEnd, LockKind
from schemas.operations import OperatorAlertRaised
from schemas.topics import ACCOUNT_LOCKS, ALERTS, DEAD_LETTERS, OPERATOR_ALERTS
from tests.integration.interfaces.support import insert_rows, log_row, seed_people, snapshot_rows
from tests.support.fake_telegram import FakeTelegram, fake_telegram
from tests.support.servers import unique_name
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

OWNER_CHAT, OTHER_CHAT, STRANGER_CHAT, ADMIN_CHAT = 7001, 7002, 7999, 7003


@pytest.fixture(scope="module")
def people(database_url):
    people = asyncio.run(
        seed_people(database_url, tag="tg", chat_ids={"owner": OWNER_CHAT, "other": OTHER_CHAT})
    )
    asyncio.run(
        insert_rows(
            database_url,
            snapshots=snapshot_rows(people.owner, count=3),
            logs=[
                log_row(
                    people.owner,
                    at=utcnow() - timedelta(minutes=1),
                    status="divergence",
                    event_type="DivergenceDetected",
                    matched=0,
                    divergence_reason="missing",
                )
            ],
        )
    )
    return people


@pytest.fixture
async def own_topics(settings):
    """Topics of this test alone, so no other test's events reach its fake server."""
    prefix = unique_name("tg").replace("_", "-")
    await ensure_topics(
        settings.kafka_bootstrap_servers, prefix, partitions=2, topics=(ALERTS, ACCOUNT_LOCKS, OPERATOR_ALERTS, DEAD_LETTERS)
    )
    # The shortest session tansu allows: each (re)start joins the group again.
    return settings.model_copy(update={"topic_prefix": prefix, "consumer_session_timeout_ms": 3000})


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with fake_telegram(known_chats={OWNER_CHAT, OTHER_CHAT, STRANGER_CHAT, ADMIN_CHAT}) as fake:
        yield fake


def _telegram_settings(fake: FakeTelegram, *, group: str) -> TelegramSettings:
    return TelegramSettings(
        TELEGRAM_BOT_TOKEN="123456:TEST-token",
        api_base=fake.base_url,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.4,
        polling_timeout_seconds=1,
        consumer_group=group,
    )


@contextlib.asynccontextmanager
async def running(settings, fake: FakeTelegram, *, group: str) -> AsyncIterator[asyncio.Task]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(settings.model_copy(update={"telegram": _telegram_settings(fake, group=group)}), stop=stop)
    )
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def alert(user_id: str, marker: str, **values: object) -> Envelope:
    payload = GuardAlertRaised(
        **(
            {
                "user_id": user_id,
                "alert_type": AlertType.DRAWDOWN_WARNING,
                "action_taken": ActionTaken.WARNING_SENT,
                "status": "open",
                "message": f"Positions close in 10 s. [{marker}]",
                "drawdown_percent": 6.1,
                "equity_gbp": 9390.0,
                "threshold_percent": 5.0,
            }
            | values
        )
    )
    return observed(payload, account_id=user_id, occurred_at=utcnow())


def lifecycle(user_id: str, marker: str) -> list[Envelope]:
    """One liquidation's alert through every state, as the guard and the alert tracker publish them."""
    warning = alert(user_id, f"warning {marker}", alert_type=AlertType.DRAWDOWN_CRITICAL)
    alert_id = warning.event_id

    def state(revision: int, status: str, action: ActionTaken, message: str, **values: object) -> Envelope:
        return alert(user_id, marker, alert_type=AlertType.DRAWDOWN_CRITICAL, alert_id=alert_id, revision=revision,
                     status=status, action_taken=action, message=f"{message} [{marker}]", **values)

    tickets = {"880001": {"symbol": "XAUUSD", "status": "closed", "pnl_gbp": -742.12, "why": None}}
    return [
        warning,
        state(1, "ordered", ActionTaken.WARNING_SENT, "ordered"),
        state(2, "failed", ActionTaken.FAILED, "could not close 1 position(s)"),
        state(3, "waiting", ActionTaken.WARNING_SENT, "market closed"),
        state(4, "escalated", ActionTaken.FAILED, "liquidation failed: 1 position(s) still open"),
        state(5, "executed", ActionTaken.POSITIONS_CLOSED, "closed", positions_closed_count=1,
              total_loss_gbp=742.12, details={"tickets": tickets}),
    ]


async def publish(settings, topic, envelopes) -> None:
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await publish_many(producer, topic, settings.topic_prefix, envelopes)
    finally:
        await producer.stop()


def times_sent(fake: FakeTelegram, marker: str) -> int:
    return sum(marker in message.text for message in fake.sent)


async def until_sent(fake: FakeTelegram, markers: list[str], *, timeout: float = 40) -> None:
    async def counts() -> list[int]:
        return [times_sent(fake, m) for m in markers]

    await eventually(
        counts,
        until=lambda c: all(n >= 1 for n in c),
        timeout=timeout,
        what=f"{len(markers)} messages to reach the fake Telegram",
    )


async def test_one_message_per_alert_state_a_person_needs_reaches_the_owner_once(own_topics, telegram, people,
                                                                                     database_url):
    await seed_people(database_url, tag=unique_name("esc"), chat_ids={"admin": ADMIN_CHAT})
    marker = f"m-{uuid.uuid4().hex[:6]}"
    states = lifecycle(people.owner, marker)
    other = alert(people.other, "other-account")
    await publish(own_topics, ALERTS, [*states, other])
    async with running(own_topics, telegram, group=unique_name("g")):
        await until_sent(telegram, [f"closed [{marker}]", "other-account"])
        # The same events again (a redelivery or replay), then one new event as a marker of progress.
        await publish(own_topics, ALERTS, states)
        await publish(own_topics, ALERTS, [alert(people.owner, "after-the-repeats")])
        await until_sent(telegram, ["after-the-repeats"])

    owner = [t for t in telegram.texts_to(OWNER_CHAT) if marker in t]
    assert [t.split("</b>", 1)[0] for t in owner] == [
        "<b>🛑 Drawdown limit breached", "<b>❌ Close failed · Drawdown limit breached",
        "<b>🚨 Liquidation failed · Drawdown limit breached", "<b>✅ Positions closed · Drawdown limit breached"], \
        "warning, failed, escalated, confirmed: once each; ordered and waiting are not told"
    assert "6.10%" in owner[0] and people.owner in owner[0]
    assert "−£742.12" in owner[-1] and "XAUUSD ticket 880001: closed" in owner[-1]
    (escalated,) = telegram.texts_to(ADMIN_CHAT)
    assert "liquidation failed: 1 position(s) still open" in escalated and people.owner in escalated, \
        "the escalation reaches the admins too"
    assert times_sent(telegram, "other-account") == 1


async def test_a_lock_and_its_unlock_reach_the_owner_once_each(own_topics, telegram, people):
    marker = f"lock-{uuid.uuid4().hex[:6]}"
    locked = observed(AccountLocked(user_id=people.owner, kind=LockKind.DRAWDOWN, ends=LockEnd.ADMIN_UNLOCK,
                                    message=f"locked [{marker}]"), account_id=people.owner, occurred_at=utcnow())
    unlocked = observed(AccountUnlocked(user_id=people.owner, lock_id=locked.event_id, kind=LockKind.DRAWDOWN,
                                        unlocked_by="ops-admin", reason=f"reviewed [{marker}]"),
                        account_id=people.owner, occurred_at=utcnow())
    await publish(own_topics, ACCOUNT_LOCKS, [locked, unlocked, locked, unlocked])  # each delivered twice
    async with running(own_topics, telegram, group=unique_name("g")):
        await until_sent(telegram, [f"locked [{marker}]", f"reviewed [{marker}]"])
        await publish(own_topics, ALERTS, [alert(people.owner, f"after {marker}")])
        await until_sent(telegram, [f"after {marker}"])
    owner = [t for t in telegram.texts_to(OWNER_CHAT) if marker in t and "after" not in t]
    assert [t.split("</b>", 1)[0] for t in owner] == ["<b>🔒 Account locked", "<b>🔓 Account unlocked"]


async def test_an_operator_alert_reaches_every_admin_once_and_no_owner(own_topics, telegram, people, database_url):
    await seed_people(database_url, tag=unique_name("ops"), chat_ids={"admin": ADMIN_CHAT})
    marker = f"loop-{uuid.uuid4().hex[:6]}"
    crash = observed(OperatorAlertRaised(kind="crash_loop", severity="critical", service="executor",
                                         message=f"executor restarted 5 times in 60 s [{marker}]"),
                     account_id="executor", occurred_at=utcnow())
    await publish(own_topics, OPERATOR_ALERTS, [crash, crash])  # delivered twice: told once
    async with running(own_topics, telegram, group=unique_name("g")):
        await until_sent(telegram, [marker])
        await publish(own_topics, ALERTS, [alert(people.owner, f"after {marker}")])
        await until_sent(telegram, [f"after {marker}"])
    (told,) = [t for t in telegram.texts_to(ADMIN_CHAT) if marker in t]
    assert told.startswith("<b>🔥 Service crash loop</b> — service <b>executor</b> (critical)")
    assert not [t for t in telegram.texts_to(OWNER_CHAT) + telegram.texts_to(OTHER_CHAT) if "restarted" in t]


async def test_429_and_5xx_are_retried_without_losing_or_doubling(own_topics, telegram, people):
    telegram.answer_next("sendMessage", ("429", 1), "500", "502", "500")
    markers = [f"r{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    await publish(own_topics, ALERTS, [alert(people.owner, m) for m in markers])
    async with running(own_topics, telegram, group=unique_name("g")):
        await until_sent(telegram, markers)

    assert [times_sent(telegram, m) for m in markers] == [1, 1, 1]
    answered = [status for method, status in telegram.attempts if method == "sendmessage"]
    assert answered[:4] == [429, 500, 502, 500] and answered.count(200) == 3


async def test_a_restart_in_the_middle_delivers_every_alert_exactly_once(own_topics, telegram, people):
    markers = [f"s{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    await publish(own_topics, ALERTS, [alert(people.owner, m) for m in markers])
    # Telegram takes four, then refuses with a long retry_after; the service is stopped while it waits.
    telegram.answer_next("sendMessage", "ok", "ok", "ok", "ok", ("429", 30))
    group = unique_name("g")
    async with running(own_topics, telegram, group=group):
        await eventually(lambda: _answered(telegram, 429), until=bool, what="the 429 to be answered")
    assert len(telegram.sent) == 4, "the restart did not happen in the middle"

    async with running(own_topics, telegram, group=group):
        await until_sent(telegram, markers)
    assert [times_sent(telegram, m) for m in markers] == [1] * len(markers)

    # A consumer with no committed offsets re-reads everything: the delivery table stops repeats.
    async with running(own_topics, telegram, group=unique_name("fresh")):
        await publish(own_topics, ALERTS, [alert(people.owner, "sentinel")])
        await until_sent(telegram, ["sentinel"])
    assert [times_sent(telegram, m) for m in markers] == [1] * len(markers)


async def _count(fake: FakeTelegram) -> int:
    return len(fake.sent)


async def _answered(fake: FakeTelegram, status: int) -> bool:
    return any(answer == status for _, answer in fake.attempts)


async def test_a_chat_telegram_refuses_is_skipped_and_the_rest_goes_on(own_topics, telegram, people):
    telegram.known_chats.discard(OWNER_CHAT)  # Telegram: "chat not found"
    await publish(
        own_topics,
        ALERTS,
        [
            alert(people.owner, "lost-chat"),
            alert(people.admin, "no-chat-linked"),
            alert(people.other, "still-delivered"),
        ],
    )
    group = unique_name("g")
    async with running(own_topics, telegram, group=group):
        await until_sent(telegram, ["still-delivered"])
    refusals = [s for m, s in telegram.attempts if m == "sendmessage" and s == 400]
    assert refusals == [400], "the refused chat is tried once, then its offset is committed"
    assert times_sent(telegram, "lost-chat") == 0 and times_sent(telegram, "no-chat-linked") == 0

    async with running(own_topics, telegram, group=group):
        await publish(own_topics, ALERTS, [alert(people.other, "after-restart")])
        await until_sent(telegram, ["after-restart"])
    assert [s for m, s in telegram.attempts if m == "sendmessage" and s == 400] == [400]


async def test_an_unusable_message_goes_to_dead_letters_and_the_next_is_sent(own_topics, telegram, people):
    producer = make_producer(own_topics.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            ALERTS.name(own_topics.topic_prefix), b"{not json", key=people.owner.encode()
        )
    finally:
        await producer.stop()
    await publish(own_topics, ALERTS, [alert(people.owner, "after-garbage")])
    async with running(own_topics, telegram, group=unique_name("g")):
        await until_sent(telegram, ["after-garbage"])
        letters = await eventually(lambda: _dead_letters(own_topics), until=bool, what="a dead letter")
    assert letters[0].payload.consumer == "telegram" and "malformed JSON" in letters[0].payload.reason


async def _dead_letters(settings) -> list:
    consumer = make_consumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        name = DEAD_LETTERS.name(settings.topic_prefix)
        partitions = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or []]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        batches = await consumer.getmany(timeout_ms=500)
        return [decode(DEAD_LETTERS, m.value) for records in batches.values() for m in records]
    finally:
        await consumer.stop()


async def test_status_answers_for_the_chats_own_account_only(own_topics, telegram, people):
    async with running(own_topics, telegram, group=unique_name("g")):
        telegram.push_message(chat_id=OWNER_CHAT, text="/status")
        telegram.push_message(chat_id=STRANGER_CHAT, text="/status")
        await eventually(lambda: _count(telegram), until=lambda n: n >= 2, what="two /status answers")
    (owner_answer,) = telegram.texts_to(OWNER_CHAT)
    assert people.owner in owner_answer and "Equity: <b>£" in owner_answer
    assert "Open divergences: <b>1</b>" in owner_answer
    assert people.other not in owner_answer
    (stranger_answer,) = telegram.texts_to(STRANGER_CHAT)
    assert stranger_answer == NOT_LINKED
