"""`reconguard users …`: add users, set roles, link Telegram chats, issue and revoke API tokens."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import async_sessionmaker

from infra.db import make_engine, make_sessionmaker
from reconguard import users
from reconguard.guard_profiles import assign_profile
from reconguard.startup import connected, loaded_settings
from schemas.envelope import utcnow

app = typer.Typer(no_args_is_help=True, help="Users, roles, Telegram chats and API tokens.")
console = Console()


def _with_sessions(work: Callable[[async_sessionmaker], Awaitable[Any]]) -> Any:
    settings = connected(loaded_settings())

    async def go() -> Any:
        assert settings.database_url
        engine = make_engine(settings.database_url)
        try:
            return await work(make_sessionmaker(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except users.UserError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None


@app.command("add")
def add(
    user_id: str,
    role: Annotated[Optional[str], typer.Option(help="trader (default) or admin")] = None,
    name: Annotated[Optional[str], typer.Option(help="Display name")] = None,
    mt5_login: Annotated[Optional[int], typer.Option(help="The user's MT5 account login")] = None,
    mt5_server: Annotated[Optional[str], typer.Option(help="The MT5 trade server")] = None,
    telegram_chat: Annotated[Optional[int], typer.Option(help="Telegram chat id for alerts")] = None,
    warning: Annotated[Optional[Decimal], typer.Option(help="Warning drawdown level, percent")] = None,
    critical: Annotated[Optional[Decimal], typer.Option(help="Critical drawdown level, percent")] = None,
) -> None:
    """Create a user, or update the given fields of an existing one (admins only change levels).

    Example: `reconguard users add u-alice --mt5-login 51000101 --mt5-server Broker-Live --critical 12`
    """
    _with_sessions(lambda s: users.add_user(
        sessions=s, user_id=user_id, role=role, display_name=name, telegram_chat_id=telegram_chat,
        mt5_login=mt5_login, mt5_server=mt5_server, warning_drawdown_percent=warning,
        critical_drawdown_percent=critical))
    console.print(f"user {user_id} saved")


@app.command("role")
def role(user_id: str, new_role: Annotated[str, typer.Argument(help="trader or admin")]) -> None:
    """Set a user's role.  Example: `reconguard users role u-carol admin`"""
    _with_sessions(lambda s: users.set_role(sessions=s, user_id=user_id, role=new_role))
    console.print(f"{user_id} is now {new_role}")


@app.command("telegram")
def telegram(user_id: str, chat_id: Annotated[Optional[int], typer.Argument()] = None) -> None:
    """Send a user's alerts to a Telegram chat (no chat id: unlink).  Example: `reconguard users telegram u-alice 4242`"""
    _with_sessions(lambda s: users.link_telegram(sessions=s, user_id=user_id, chat_id=chat_id))
    console.print(f"{user_id} linked to chat {chat_id}" if chat_id else f"{user_id} unlinked")


@app.command("token")
def token(
    user_id: str,
    name: Annotated[str, typer.Option(help="What the token is for")] = "",
    expires: Annotated[Optional[str], typer.Option(
        help="When it expires: a duration (90m, 12h, 30d, 8w) or an ISO 8601 time; "
             "default RECONGUARD_API_TOKEN_EXPIRY_DAYS days")] = None,
) -> None:
    """Issue an API token; it is printed once and stored only as a hash. The API refuses it (401)
    once it has expired.

    Example: `reconguard users token u-alice --name "alice's laptop" --expires 30d`
    """
    lifetime = timedelta(days=loaded_settings().api.token_expiry_days)

    async def issue(s: async_sessionmaker) -> users.IssuedToken:
        now = utcnow()
        expires_at = now + lifetime if expires is None else users.parse_expiry(expires, now=now)
        return await users.issue_token(sessions=s, user_id=user_id, name=name, expires_at=expires_at)

    issued = _with_sessions(issue)
    console.print(f"token {issued.token_id} for {user_id}, expires {issued.expires_at:%Y-%m-%d %H:%M} UTC "
                  "(shown once, keep it safe):")
    print(issued.token)


@app.command("revoke")
def revoke(token_id: uuid.UUID) -> None:
    """Revoke an API token by its id.  Example: `reconguard users revoke 2b1f…`"""
    _with_sessions(lambda s: users.revoke_token(sessions=s, token_id=token_id))
    console.print(f"token {token_id} revoked")


@app.command("list")
def list_all() -> None:
    """List users and their tokens (never the tokens themselves).  Example: `reconguard users list`"""
    async def both(s: async_sessionmaker) -> tuple[list, list]:
        return await users.list_users(sessions=s), await users.list_tokens(sessions=s)

    people, tokens = _with_sessions(both)
    table = Table("user", "role", "mt5 login", "telegram", "warning %", "critical %", "active tokens")
    now = utcnow()
    for u in people:
        active = sum(1 for t in tokens if t.user_id == u.id and t.revoked_at is None
                     and (t.expires_at is None or t.expires_at > now))
        table.add_row(u.id, u.role, str(u.mt5_login or "—"), str(u.telegram_chat_id or "—"),
                      f"{u.warning_drawdown_percent}", f"{u.critical_drawdown_percent}", str(active))
    console.print(table)



@app.command("profile")
def profile(
    user_id: str,
    name: Annotated[str, typer.Argument(help="A profile name (`reconguard users profiles` lists them)")],
    initial_balance: Annotated[Optional[Decimal], typer.Option(
        help="Initial balance (GBP) the prop-firm profiles measure from; default: the first reading's balance")
    ] = None,
) -> None:
    """Assign a guard profile to an account (docs/guard-rules.md, "Guard profiles"); the worker takes it up
    at its next levels refresh.  Example: `reconguard users profile u-alice prop-static --initial-balance 100000`
    """
    guard = loaded_settings().guard

    async def assign(s: async_sessionmaker) -> None:
        async with s() as session:
            await assign_profile(session, user_id=user_id, profile=name, guard=guard,
                                 initial_balance_gbp=initial_balance)

    _with_sessions(assign)
    console.print(f"{user_id} now uses guard profile {name} v{guard.profiles[name].version}")


@app.command("profiles")
def profiles() -> None:
    """List the guard profiles an account can be given.  Example: `reconguard users profiles`"""
    table = Table("profile", "version", "family", "description")
    for key, p in sorted(loaded_settings().guard.profiles.items()):
        table.add_row(key, str(p.version), p.family.value, p.description)
    console.print(table)
