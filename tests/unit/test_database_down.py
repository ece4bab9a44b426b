"""Which failures mean "the database is down, wait for it" (and are retried with backoff), and which are
refusals of a statement (raised at once). The wrapped errors are SQLAlchemy's own, as its asyncpg dialect
raises them while PostgreSQL recovers from a kill -9."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError, IntegrityError

from infra.db import database_down, while_database_down


def _wrapped(error: Exception) -> DBAPIError:
    """What SQLAlchemy raises for asyncpg's ``error`` while connecting (its dialect's own translation)."""
    adapted = AsyncAdapt_asyncpg_dbapi.Error(str(error), error)
    return DBAPIError.instance("connect", None, adapted, AsyncAdapt_asyncpg_dbapi.Error)


def test_a_server_starting_up_or_unreachable_is_down_and_a_refused_statement_is_not():
    starting = asyncpg.CannotConnectNowError("the database system is starting up")
    assert database_down(starting)
    assert database_down(_wrapped(starting)), "as SQLAlchemy wraps it: a plain DBAPIError with SQLSTATE 57P03"
    assert database_down(ConnectionRefusedError(111, "Connect call failed"))
    assert database_down(_wrapped(asyncpg.ConnectionDoesNotExistError("connection was closed")))
    assert database_down(asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"))
    duplicate = asyncpg.UniqueViolationError("duplicate key value violates unique constraint")
    assert not database_down(duplicate)
    assert not database_down(_wrapped(duplicate))
    assert not database_down(IntegrityError("INSERT", None, Exception("duplicate")))
    assert not database_down(ValueError("a bug"))


async def test_an_outage_is_waited_out_and_anything_else_raised():
    failures = [_wrapped(asyncpg.CannotConnectNowError("the database system is starting up")),
                ConnectionRefusedError(111, "refused")]
    calls = []

    async def run() -> None:
        calls.append(1)
        if failures:
            raise failures.pop(0)

    await while_database_down(run, stop=asyncio.Event(), what="test", initial=0.01)
    assert len(calls) == 3, "two outages waited out, then it ran to its end"

    async def refused() -> None:
        raise _wrapped(asyncpg.UniqueViolationError("duplicate key"))

    with pytest.raises(DBAPIError):
        await while_database_down(refused, stop=asyncio.Event(), what="test", initial=0.01)


async def test_a_server_of_another_kind_is_waited_for_only_when_named():
    class BrokerDown(Exception):
        pass

    attempts = []

    async def run() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise BrokerDown

    await while_database_down(run, stop=asyncio.Event(), what="test", initial=0.01, also=(BrokerDown,))
    assert len(attempts) == 3
    with pytest.raises(BrokerDown):
        attempts.clear()
        await while_database_down(run, stop=asyncio.Event(), what="test", initial=0.01)
