"""Shared by the interface tests: users with tokens, projection rows, and a served API."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import insert, text

from infra.db import make_engine, make_sessionmaker
from infra.embedded import free_port, wait_until
from infra.partitions import SNAPSHOTS
from infra.settings import Settings
from infra.tables import DrawdownAlert, PositionSnapshot, ReconciliationLog
from reconguard.api.app import serve
from reconguard.users import add_user, issue_token
from schemas import utcnow


@dataclass(frozen=True)
class People:
    """The four callers of every access test, and the tokens they present."""

    owner: str
    other: str
    admin: str
    tokens: dict[str, str]

    def headers(self, who: str | None) -> dict[str, str]:
        return {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}


async def seed_people(database_url: str, *, tag: str, chat_ids: dict[str, int] | None = None) -> People:
    """A trader who owns the data, another trader, and an admin, each with one token."""
    chat_ids = chat_ids or {}
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    names = {"owner": f"{tag}-owner", "other": f"{tag}-other", "admin": f"{tag}-admin"}
    tokens: dict[str, str] = {}
    try:
        for role_name, user_id in names.items():
            await add_user(
                sessions=sessions,
                user_id=user_id,
                role="admin" if role_name == "admin" else "trader",
                display_name=role_name.title(),
                telegram_chat_id=chat_ids.get(role_name),
            )
            tokens[role_name] = (await issue_token(sessions=sessions, user_id=user_id, name="test")).token
    finally:
        await engine.dispose()
    return People(owner=names["owner"], other=names["other"], admin=names["admin"], tokens=tokens)


def snapshot_rows(user_id: str, *, count: int, start: datetime | None = None) -> list[dict]:
    """A falling-then-recovering equity curve, one snapshot a minute."""
    start = start or utcnow() - timedelta(minutes=count)
    rows, peak = [], 10_000.0
    for i in range(count):
        equity = 10_000.0 - 60 * min(i, count - i) + (i % 3) * 5
        peak = max(peak, equity)
        rows.append(
            dict(
                id=uuid.uuid4(),
                user_id=user_id,
                equity_gbp=equity,
                balance_gbp=10_000,
                peak_equity_gbp=peak,
                drawdown_percent=round((peak - equity) / peak * 100, 4),
                open_positions_count=2,
                total_volume_lots=0.3,
                open_pnl_gbp=equity - 10_000,
                margin_used_percent=12.5,
                created_at=start + timedelta(minutes=i),
            )
        )
    return rows


def log_row(user_id: str, *, at: datetime, **values: object) -> dict:
    row = dict(
        id=uuid.uuid4(),
        user_id=user_id,
        event_type="PositionMatched",
        status="matched",
        matched=1,
        symbol="EURUSD",
        direction="buy",
        volume=0.1,
        mt5_position_id=1001,
        created_at=at,
        updated_at=at,
    )
    return row | values


def alert_row(user_id: str, *, at: datetime, **values: object) -> dict:
    row = dict(
        id=uuid.uuid4(),
        user_id=user_id,
        alert_type="drawdown_warning",
        drawdown_percent=6.1,
        equity_gbp=9390,
        threshold_percent=5,
        action_taken="warning_sent",
        status="open",
        created_at=at,
    )
    return row | values


async def insert_rows(
    database_url: str, *, snapshots: list[dict] = (), logs: list[dict] = (), alerts: list[dict] = ()
) -> None:
    engine = make_engine(database_url)
    try:
        async with engine.begin() as connection:
            # position_snapshots is partitioned by day: the projector makes a day's partition before its
            # rows; rows put in directly need theirs made too.
            for day in {SNAPSHOTS.bounds(row["created_at"])[0]: row["created_at"] for row in snapshots}.values():
                await connection.execute(text(SNAPSHOTS.create_sql(day)))
            for model, rows in (
                (PositionSnapshot, snapshots),
                (ReconciliationLog, logs),
                (DrawdownAlert, alerts),
            ):
                # One statement per set of keys: a multi-row insert takes its columns from the first row.
                for keys in {frozenset(row) for row in rows}:
                    await connection.execute(insert(model), [row for row in rows if frozenset(row) == keys])
    finally:
        await engine.dispose()


def people_with_data(database_url: str, *, tag: str, snapshots: int, at: datetime) -> People:
    """The four callers, and the owner's snapshots, one reconciliation row and one alert (at ``at``)."""
    people = asyncio.run(seed_people(database_url, tag=tag))
    asyncio.run(insert_rows(database_url, snapshots=snapshot_rows(people.owner, count=snapshots),
                            logs=[log_row(people.owner, at=at)], alerts=[alert_row(people.owner, at=at)]))
    return people


@contextlib.contextmanager
def served_api(settings: Settings) -> Iterator[str]:
    """The `api` service on a free port in a thread of its own; yields its base URL."""
    settings = settings.model_copy(update={"http_port": free_port(), "http_host": "127.0.0.1"})
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(serve(settings, stop=stop))
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            failure.append(error)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="api-under-test", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{settings.http_port}"
    wait_until(lambda: failure != [] or _answers(base_url), timeout=30, what="the API to listen")
    if failure:
        raise failure[0]
    try:
        yield base_url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=20)
        assert not thread.is_alive(), "the API did not stop within 20 s of stop being set"
        assert not failure, f"the API failed: {failure[0]!r}"


def _answers(base_url: str) -> bool:
    try:
        httpx.get(f"{base_url}/openapi.json", timeout=1)
        return True
    except httpx.HTTPError:
        return False
