"""What the API returns: filters, pages, the manual sync on the topic, and health."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest
from aiokafka import TopicPartition

from infra.kafka import make_consumer
from schemas import decode, utcnow
from schemas.topics import SYNC_COMMANDS
from tests.integration.interfaces.support import (
    alert_row,
    insert_rows,
    log_row,
    seed_people,
    served_api,
    snapshot_rows,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

NOW = utcnow().replace(microsecond=0)


@pytest.fixture(scope="module")
def people(database_url):
    people = asyncio.run(seed_people(database_url, tag="data"))
    owner = people.owner
    at = [NOW - timedelta(minutes=60 - i) for i in range(60)]
    logs = (
        [log_row(owner, at=at[i], symbol="EURUSD", mt5_position_id=1000 + i) for i in range(0, 10)]
        + [
            log_row(
                owner,
                at=at[i],
                symbol="XAUUSD",
                mt5_position_id=2000,
                event_type="DivergenceDetected",
                status="divergence",
                matched=0,
                divergence_reason="volume_mismatch",
            )
            for i in range(10, 13)
        ]
        + [
            log_row(
                owner,
                at=at[20],
                symbol="GBPUSD",
                mt5_position_id=3000,
                event_type="DivergenceDetected",
                status="divergence",
                matched=0,
                divergence_reason="missing",
            ),
            log_row(
                owner,
                at=at[21],
                symbol="GBPUSD",
                mt5_position_id=3000,
                event_type="DivergenceResolved",
                status="matched",
                matched=1,
            ),
            log_row(
                owner,
                at=at[22],
                symbol="USDJPY",
                mt5_position_id=4000,
                event_type="PositionCloseRecorded",
                status="success",
                close_reason="drawdown_guard",
                closed_price=151.25,
                pnl_gbp=-42.5,
            ),
        ]
    )
    alerts = [
        alert_row(owner, at=at[30]),
        alert_row(
            owner,
            at=at[31],
            alert_type="drawdown_critical",
            action_taken="positions_closed",
            status="executed",
        ),
    ]
    asyncio.run(
        insert_rows(
            database_url, snapshots=snapshot_rows(owner, count=30, start=at[0]), logs=logs, alerts=alerts
        )
    )
    return people


@pytest.fixture(scope="module")
def api(settings, people):
    with (
        served_api(settings) as base_url,
        httpx.Client(base_url=base_url, timeout=10, headers=people.headers("admin")) as client,
    ):
        yield client


def _pages(api: httpx.Client, path: str, **params: object) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        body = api.get(path, params={**params, **({"cursor": cursor} if cursor else {})}).json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_pages_cover_every_row_once_newest_first(api, people):
    pages = _pages(api, f"/users/{people.owner}/logs", limit=4)
    rows = [row for page in pages for row in page]
    assert [len(p) for p in pages[:-1]] == [4] * (len(pages) - 1)
    assert len(rows) == len({r["id"] for r in rows}) == 16
    stamps = [r["created_at"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)


@pytest.mark.parametrize(
    ("params", "count"),
    [
        pytest.param({"symbol": "XAUUSD"}, 3, id="by symbol"),
        pytest.param({"reason": "volume_mismatch"}, 3, id="by divergence reason"),
        pytest.param({"status": "divergence"}, 4, id="by status"),
        pytest.param({"event_type": "PositionCloseRecorded"}, 1, id="by event type"),
        pytest.param({"since": (NOW - timedelta(minutes=50)).isoformat()}, 6, id="since: rows at or after"),
        pytest.param({"until": (NOW - timedelta(minutes=50)).isoformat()}, 10, id="until: rows before"),
        pytest.param(
            {"symbol": "XAUUSD", "until": (NOW - timedelta(minutes=49)).isoformat()},
            1,
            id="symbol and time together",
        ),
    ],
)
def test_log_filters(api, people, params, count):
    response = api.get(f"/users/{people.owner}/logs", params=params | {"limit": 500})
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == count


@pytest.mark.parametrize(
    ("path", "params", "count"),
    [
        pytest.param("alerts", {"alert_type": "drawdown_critical"}, 1, id="alerts by type"),
        pytest.param("alerts", {"status": "open"}, 1, id="alerts by status"),
        pytest.param(
            "snapshots", {"since": (NOW - timedelta(minutes=40)).isoformat()}, 10, id="snapshots since"
        ),
    ],
)
def test_other_filters(api, people, path, params, count):
    assert len(api.get(f"/users/{people.owner}/{path}", params=params).json()["items"]) == count


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"limit": 501}, 422, id="limit above 500"),
        pytest.param({"limit": 0}, 422, id="limit zero"),
        pytest.param({"cursor": "not-a-cursor"}, 400, id="forged cursor"),
        pytest.param({"since": "2026-01-01T00:00:00"}, 422, id="time without offset"),
        pytest.param({"since": NOW.isoformat(), "until": NOW.isoformat()}, 400, id="empty time range"),
        pytest.param({"symbol": "EUR'; DROP TABLE users;--"}, 422, id="symbol with SQL in it"),
        pytest.param({"reason": "because"}, 422, id="unknown divergence reason"),
    ],
)
def test_bad_input_is_a_clear_4xx(api, people, params, expected):
    response = api.get(f"/users/{people.owner}/logs", params=params)
    assert response.status_code == expected, response.text
    assert response.json()["detail"]


def test_status_is_the_latest_outcome_per_position(api, people):
    body = api.get(f"/users/{people.owner}/status").json()
    latest = {p["mt5_position_id"]: p for p in body["positions"]}
    assert latest[2000]["status"] == "divergence"
    assert latest[3000]["event_type"] == "DivergenceResolved"  # resolved later: not open any more
    assert body["open_divergences"] == 1
    assert body["latest_snapshot"]["user_id"] == people.owner


def test_overview_carries_series_divergences_alerts_and_closes(api, people):
    account = next(a for a in api.get("/overview").json()["accounts"] if a["user_id"] == people.owner)
    assert len(account["series"]) == 30
    assert [d["mt5_position_id"] for d in account["open_divergences"]] == [2000]
    assert len(account["recent_alerts"]) == 2
    assert account["recent_closes"][0]["close_reason"] == "drawdown_guard"


async def _sync_commands(settings) -> list:
    consumer = make_consumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        name = SYNC_COMMANDS.name(settings.topic_prefix)
        partitions = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or []]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        batches = await consumer.getmany(timeout_ms=1000)
        return [decode(SYNC_COMMANDS, m.value) for msgs in batches.values() for m in msgs]
    finally:
        await consumer.stop()


async def test_sync_lands_on_the_topic_and_a_second_within_10s_is_429(api, people, settings):
    first = await asyncio.to_thread(api.post, f"/users/{people.other}/sync")
    assert first.status_code == 202, first.text
    command_id = uuid.UUID(first.json()["command_id"])
    second = await asyncio.to_thread(api.post, f"/users/{people.other}/sync")
    assert second.status_code == 429
    assert 1 <= int(second.headers["retry-after"]) <= 10
    # Another account has its own slot.
    assert (await asyncio.to_thread(api.post, f"/users/{people.owner}/sync")).status_code == 202

    commands = await eventually(
        lambda: _sync_commands(settings),
        until=lambda found: any(c.event_id == command_id for c in found),
        what="the sync command on the topic",
    )
    mine = [c for c in commands if c.account_id == people.other]
    assert len(mine) == 1, "the refused second request must not publish anything"
    assert mine[0].payload.user_id == people.other and mine[0].payload.requested_by == people.admin


def test_health_reports_broker_and_database(api):
    body = api.get("/health").json()
    assert body["status"] == "ok"
    assert body["checks"]["broker"]["ok"] and body["checks"]["database"]["ok"]


def test_health_says_which_dependency_is_down(settings, people):
    broken = settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    with served_api(broken) as base_url:
        response = httpx.get(f"{base_url}/health", timeout=20)
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is False and body["checks"]["broker"]["error"]
