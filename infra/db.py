"""The database: engines, Alembic as the one owner of the schema, and waiting out an outage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from alembic.config import Config
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from alembic import command
from infra.dburl import sqlalchemy_url

REPO_ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


def alembic_config(database_url: str, *, schema: str | None = None) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    config.attributes["database_url"] = database_url
    config.attributes["schema"] = schema
    config.attributes["configure_logging"] = False
    return config


def migrate(database_url: str, revision: str = "head", *, schema: str | None = None) -> None:
    """``alembic upgrade`` (blocking: call it from a thread inside an event loop)."""
    command.upgrade(alembic_config(database_url, schema=schema), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def make_engine(database_url: str, **options: object) -> AsyncEngine:
    return create_async_engine(sqlalchemy_url(database_url), pool_pre_ping=True, **options)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


#: What a lost or unreachable database raises, whichever client noticed it.
DATABASE_DOWN: tuple[type[BaseException], ...] = (
    OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError, OperationalError,
    InterfaceError,
    # The connection's protocol is in a state it cannot leave ("cannot switch to state 15; another
    # operation (2) is in progress", seen once at a projector's start): only a new connection helps.
    asyncpg.InternalClientError)


#: SQLSTATEs of a server that cannot serve now: class 08 (connection exceptions), and shutting down,
#: crashed or starting up ("the database system is starting up" while it recovers from a kill -9).
_DOWN_STATES = ("08", "57P01", "57P02", "57P03")


def database_down(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached or cannot serve now (rather than refusing a
    statement). SQLAlchemy wraps asyncpg's refusals while connecting ("the database system is starting
    up") as a plain ``DBAPIError``: those are told by their SQLSTATE."""
    if isinstance(error, DATABASE_DOWN):
        return True
    if isinstance(error, DBAPIError):
        state = getattr(error.orig, "sqlstate", None) or ""
        return error.connection_invalidated or state.startswith(_DOWN_STATES) or isinstance(
            error.orig, DATABASE_DOWN)
    return False


async def while_database_down(run: Callable[[], Awaitable[None]], *, stop: asyncio.Event, what: str,
                              initial: float = 0.5, maximum: float = 30.0,
                              also: tuple[type[BaseException], ...] = ()) -> None:
    """Run ``run`` until it returns; while it fails because the database is down (or with one of ``also``:
    another server it needs cannot be reached, e.g. the broker), wait with backoff and run it again (it
    must go on from its stored progress). Any other failure is raised."""
    delay = initial
    while not stop.is_set():
        started = time.monotonic()
        try:
            await run()
            return
        except Exception as error:
            if not (database_down(error) or isinstance(error, also)):
                raise
            if time.monotonic() - started > maximum:  # it ran a while: a new outage, not the same one
                delay = initial
            down = "database" if database_down(error) else "a server it needs"
            log.warning("%s: %s unavailable (%r); again in %.1f s", what, down, error, delay)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(maximum, delay * 2)
