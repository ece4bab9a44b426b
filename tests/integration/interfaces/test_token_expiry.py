"""Tokens expire: the API answers 401 once a token has expired, `users token --expires` sets when,
and the admin token `reconguard run` prints lives as long as the run."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from infra.db import make_engine, make_sessionmaker
from infra.tables import ApiToken
from reconguard import runtoken
from reconguard.cli import app
from reconguard.users import add_user, issue_token
from schemas import utcnow
from tests.integration.interfaces.support import served_api

pytestmark = pytest.mark.integration


async def _in_database(database_url, work):
    engine = make_engine(database_url)
    try:
        return await work(make_sessionmaker(engine))
    finally:
        await engine.dispose()


async def _token_row(sessions, token_id) -> ApiToken:
    async with sessions() as session:
        return (await session.scalars(select(ApiToken).where(ApiToken.id == token_id))).one()


@pytest.fixture(scope="module")
def api(settings):
    with served_api(settings) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


def _me(api: httpx.Client, token: str) -> httpx.Response:
    return api.get("/me", headers={"Authorization": f"Bearer {token}"})


def test_an_expired_token_is_refused(api, database_url):
    async def issue(sessions):
        await add_user(sessions=sessions, user_id="exp-frank")
        live = await issue_token(sessions=sessions, user_id="exp-frank", expires_at=utcnow() + timedelta(hours=1))
        dead = await issue_token(sessions=sessions, user_id="exp-frank", expires_at=utcnow() - timedelta(seconds=1))
        return live, dead

    live, dead = asyncio.run(_in_database(database_url, issue))
    assert _me(api, live.token).status_code == 200
    refused = _me(api, dead.token)
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]
    assert refused.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("expires", "low", "high"),
    [
        pytest.param("30d", timedelta(days=30) - timedelta(minutes=5), timedelta(days=30), id="a duration in days"),
        pytest.param("90m", timedelta(minutes=85), timedelta(minutes=90), id="a duration in minutes"),
        pytest.param(None, timedelta(days=7) - timedelta(minutes=5), timedelta(days=7),
                     id="none given: RECONGUARD_API_TOKEN_EXPIRY_DAYS"),
    ],
)
def test_users_token_expires_when_told(settings, database_url, monkeypatch, expires, low, high):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("RECONGUARD_API_TOKEN_EXPIRY_DAYS", "7")
    asyncio.run(_in_database(database_url, lambda s: add_user(sessions=s, user_id="exp-gina")))
    started = utcnow()
    args = ["users", "token", "exp-gina"] + ([] if expires is None else ["--expires", expires])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]

    async def expiry(sessions):
        async with sessions() as session:
            rows = (await session.scalars(select(ApiToken).where(ApiToken.user_id == "exp-gina"))).all()
        from reconguard.users import hash_token

        (row,) = [r for r in rows if r.token_hash == hash_token(token)]
        return row.expires_at

    expires_at = asyncio.run(_in_database(database_url, expiry))
    assert started + low <= expires_at <= utcnow() + high


@pytest.mark.parametrize("expires", ["2001-01-01T00:00:00Z", "yesterday", "-5d", "0m"])
def test_users_token_refuses_an_expiry_that_is_not_in_the_future(settings, database_url, monkeypatch, expires):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("DATABASE_URL", database_url)
    asyncio.run(_in_database(database_url, lambda s: add_user(sessions=s, user_id="exp-hal")))
    result = CliRunner().invoke(app, ["users", "token", "exp-hal", "--expires", expires])
    assert result.exit_code == 2 and "expires" in result.output


def test_the_run_token_lives_as_long_as_the_run(api, settings, database_url):
    async def story(sessions):
        leftover = await runtoken.issue(settings)  # a crashed run's token, never revoked
        issued = await runtoken.issue(settings)
        stop = asyncio.Event()
        holder = asyncio.create_task(runtoken.hold(settings, stop=stop, renew_every=timedelta(milliseconds=50)))
        first_expiry = (await _token_row(sessions, issued.token_id)).expires_at
        for _ in range(200):  # renewed while the run lasts
            await asyncio.sleep(0.05)
            if (await _token_row(sessions, issued.token_id)).expires_at > first_expiry:
                break
        renewed = (await _token_row(sessions, issued.token_id)).expires_at
        during = await asyncio.to_thread(_me, api, issued.token)
        stop.set()
        await holder
        after = await asyncio.to_thread(_me, api, issued.token)
        old = await asyncio.to_thread(_me, api, leftover.token)
        return first_expiry, renewed, during.status_code, after.status_code, old.status_code

    first_expiry, renewed, during, after, old = asyncio.run(_in_database(database_url, story))
    assert first_expiry <= utcnow() + runtoken.LEASE, "a short lease, not a token for ever"
    assert renewed > first_expiry, "the lease is renewed while the run lasts"
    assert (during, after, old) == (200, 401, 401), "good during the run; revoked at a clean stop and at the next run"
