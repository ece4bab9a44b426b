"""The admin token `reconguard run` prints: it lives as long as the run.

It is issued with a short lease (``LEASE``) that the ``hold`` service renews while the run lasts,
and revoked when the run stops cleanly. After a crash it expires within one lease, and the next run
revokes it before issuing its own: a printed token is never good for long after its run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker

from infra.db import make_engine, make_sessionmaker
from infra.settings import Settings
from reconguard.users import IssuedToken, add_user, extend_tokens_named, issue_token, revoke_tokens_named
from schemas.envelope import utcnow

log = logging.getLogger(__name__)

ADMIN = "ops-admin"
NAME = "reconguard run"
LEASE = timedelta(hours=2)
RENEW_EVERY = timedelta(minutes=20)


@contextlib.asynccontextmanager
async def _sessions(settings: Settings) -> AsyncIterator[async_sessionmaker]:
    assert settings.database_url
    engine = make_engine(settings.database_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def issue(settings: Settings) -> IssuedToken:
    """Revoke what an earlier run left, then issue this run's admin token."""
    async with _sessions(settings) as sessions:
        await add_user(sessions=sessions, user_id=ADMIN, role="admin", display_name="Operations (reconguard run)")
        left = await revoke_tokens_named(sessions=sessions, user_id=ADMIN, name=NAME)
        if left:
            log.info("revoked %d admin token(s) left by an earlier run", left)
        return await issue_token(sessions=sessions, user_id=ADMIN, name=NAME, expires_at=utcnow() + LEASE)


async def hold(settings: Settings, *, stop: asyncio.Event, renew_every: timedelta = RENEW_EVERY) -> None:
    """The service that keeps the run's token alive until ``stop``, then revokes it."""
    async with _sessions(settings) as sessions:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), renew_every.total_seconds())
            if not stop.is_set():
                await _renew(sessions)
        try:
            await revoke_tokens_named(sessions=sessions, user_id=ADMIN, name=NAME)
        except (OSError, SQLAlchemyError) as error:  # it expires within a lease, and the next run revokes it
            log.warning("could not revoke the run's admin token (%s); it expires within %s", type(error).__name__,
                        LEASE)
        else:
            log.info("the run's admin token is revoked")


async def _renew(sessions: async_sessionmaker) -> None:
    try:
        await extend_tokens_named(sessions=sessions, user_id=ADMIN, name=NAME, expires_at=utcnow() + LEASE)
    except (OSError, SQLAlchemyError) as error:  # the database is away: the lease still covers a retry
        log.warning("could not renew the run's admin token (%s); retrying", type(error).__name__)
