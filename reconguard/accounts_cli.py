"""`reconguard accounts …`: see the accounts locked after a liquidation, and unlock one."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from infra.db import make_engine, make_sessionmaker
from infra.kafka import ensure_topics, make_producer, publish
from infra.settings import Settings
from infra.tables import AccountLockEvent
from reconguard.api import lock_queries, queries
from reconguard.startup import connected, loaded_settings
from schemas import observed, utcnow
from schemas.locks import UnlockAccount
from schemas.topics import LOCK_COMMANDS

app = typer.Typer(no_args_is_help=True, help="Account locks: list them, and unlock an account (admins).")
console = Console()


class RefusedError(Exception):
    """The unlock cannot be asked for (no such admin, or the account is not locked)."""


@app.command("locks")
def locks() -> None:
    """List the accounts locked now. Example: `reconguard accounts locks`"""
    settings = connected(loaded_settings())
    rows = asyncio.run(_locks_in_force(settings))
    table = Table("account", "kind", "since", "ends", "why", title="locked accounts")
    for r in rows:
        table.add_row(r.user_id, r.kind, f"{r.created_at:%Y-%m-%d %H:%M:%S}", r.ends or "", r.reason or "")
    console.print(table if rows else "no account is locked")


@app.command("unlock")
def unlock(
    user_id: Annotated[str, typer.Argument(help="The locked account's user id")],
    reason: Annotated[str, typer.Option(help="Why the account may trade again (recorded)")],
    by: Annotated[str, typer.Option(help="Your admin user id (recorded as who unlocked)")],
) -> None:
    """End an account's lock. Example: `reconguard accounts unlock u-dave --by u-admin --reason "reviewed"`"""
    settings = connected(loaded_settings())
    try:
        command_id = asyncio.run(request_unlock(settings, user_id=user_id, by=by, reason=reason))
    except RefusedError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    console.print(f"unlock of {user_id} requested (command {command_id}); the worker records it")


async def _locks_in_force(settings: Settings) -> list[AccountLockEvent]:
    assert settings.database_url is not None
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await lock_queries.current_locks(session, limit=500)
    finally:
        await engine.dispose()


async def request_unlock(settings: Settings, *, user_id: str, by: str, reason: str) -> str:
    """Check that ``by`` is an admin and ``user_id`` is locked, then publish UnlockAccount; its id."""
    assert settings.database_url is not None and settings.kafka_bootstrap_servers is not None
    if not reason.strip():
        raise RefusedError("give a reason (it is recorded with the unlock)")
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            admin = await queries.get_user(session, user_id=by)
            if admin is None or admin.role != "admin":
                raise RefusedError(f"{by!r} is not an admin")
            if await lock_queries.current_lock(session, user_id=user_id) is None:
                raise RefusedError(f"{user_id!r} is not locked")
    finally:
        await engine.dispose()
    command = observed(UnlockAccount(user_id=user_id, requested_by=by, reason=reason[:500]), account_id=user_id,
                       occurred_at=utcnow())
    await ensure_topics(settings.kafka_bootstrap_servers, settings.topic_prefix,
                        partitions=settings.topic_partitions, topics=(LOCK_COMMANDS,))
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await publish(producer, LOCK_COMMANDS, settings.topic_prefix, command)
    finally:
        await producer.stop()
    return str(command.event_id)
