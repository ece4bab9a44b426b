"""Users, roles and API tokens: what the `reconguard users` command line calls.

A token is shown once, when it is issued, and only its SHA-256 hash is stored; the API looks a
caller up by that hash. Nothing here logs a token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from infra.tables import ApiToken, User
from schemas.envelope import utcnow

Role = Literal["trader", "admin"]
ROLES: tuple[Role, ...] = ("trader", "admin")

#: User ids the API can address in a path: letters, digits and a few separators (the API's path
#: parameter uses the same pattern, so a user made here is always reachable there).
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,63}$"
_USER_ID = re.compile(USER_ID_PATTERN)
_TOKEN_PREFIX = "rg_"


class UserError(ValueError):
    """A request the users module refuses (unknown user, bad id or role); the message says why."""


@dataclass(frozen=True)
class IssuedToken:
    """The one moment a token exists in clear: show ``token`` to the operator, then forget it."""

    token_id: uuid.UUID
    user_id: str
    name: str
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenInfo:
    token_id: uuid.UUID
    user_id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    # 32 random bytes; the prefix lets secret scanners recognise a leaked token.
    return _TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_user_id(user_id: str) -> str:
    if not _USER_ID.fullmatch(user_id):
        raise UserError(f"user id must match {USER_ID_PATTERN} (1-64 letters, digits or ._@:+-)")
    return user_id


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role  # type: ignore[return-value]


async def add_user(
    *,
    sessions: async_sessionmaker,
    user_id: str,
    role: str | None = None,
    display_name: str | None = None,
    telegram_chat_id: int | None = None,
    mt5_login: int | None = None,
    mt5_server: str | None = None,
    warning_drawdown_percent: Decimal | None = None,
    critical_drawdown_percent: Decimal | None = None,
) -> None:
    """Create a user (a trader unless ``role`` says otherwise), or update the fields given here of an
    existing one, so provisioning scripts can run again."""
    values: dict[str, object] = {"id": check_user_id(user_id)}
    optional = {
        "role": None if role is None else check_role(role),
        "display_name": None if display_name is None else display_name[:128],
        "telegram_chat_id": telegram_chat_id,
        "mt5_login": mt5_login,
        "mt5_server": mt5_server,
        "warning_drawdown_percent": warning_drawdown_percent,
        "critical_drawdown_percent": critical_drawdown_percent,
    }
    values |= {key: value for key, value in optional.items() if value is not None}
    statement = insert(User).values(**values)
    changes = {key: statement.excluded[key] for key in values if key != "id"} | {"updated_at": utcnow()}
    async with sessions.begin() as session:
        await session.execute(statement.on_conflict_do_update(index_elements=[User.id], set_=changes))


async def set_role(*, sessions: async_sessionmaker, user_id: str, role: str) -> None:
    await _update_user(sessions=sessions, user_id=user_id, role=check_role(role))


async def link_telegram(*, sessions: async_sessionmaker, user_id: str, chat_id: int | None) -> None:
    """Send this user's alerts to ``chat_id`` (None unlinks the chat)."""
    await _update_user(sessions=sessions, user_id=user_id, telegram_chat_id=chat_id)


async def _update_user(*, sessions: async_sessionmaker, user_id: str, **values: object) -> None:
    async with sessions.begin() as session:
        result = await session.execute(
            update(User).where(User.id == user_id).values(**values, updated_at=utcnow())
        )
        if result.rowcount == 0:
            raise UserError(f"no user {user_id!r}")


_DURATION = re.compile(r"^(\d{1,5})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(text: str, *, now: datetime) -> datetime:
    """When a token given ``--expires TEXT`` expires: a duration from ``now`` (``90m``, ``12h``,
    ``30d``, ``8w``) or an ISO 8601 time (UTC if it names no zone); never in the past."""
    match = _DURATION.fullmatch(text.strip())
    try:
        if match:
            moment = now + timedelta(**{_UNITS[match[2]]: int(match[1])})
        else:
            moment = datetime.fromisoformat(text.strip())
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise UserError(f"--expires takes a duration (90m, 12h, 30d, 8w) or an ISO 8601 time, got {text!r}") from None
    if moment <= now:
        raise UserError(f"--expires {text!r} is not in the future")
    return moment


#: A token's lifetime when its issuer names none (the command line uses RECONGUARD_API_TOKEN_EXPIRY_DAYS).
DEFAULT_TOKEN_LIFETIME = timedelta(days=90)


async def issue_token(
    *, sessions: async_sessionmaker, user_id: str, name: str = "", expires_at: datetime | None = None,
) -> IssuedToken:
    """A new bearer token for ``user_id``, refused by the API after ``expires_at`` (default: in
    DEFAULT_TOKEN_LIFETIME); the clear token is in the result and nowhere else."""
    expires_at = expires_at or utcnow() + DEFAULT_TOKEN_LIFETIME
    token = new_token()
    token_id = uuid.uuid4()
    async with sessions.begin() as session:
        if await session.get(User, user_id) is None:
            raise UserError(f"no user {user_id!r}")
        session.add(ApiToken(id=token_id, user_id=user_id, token_hash=hash_token(token), name=name[:64],
                             expires_at=expires_at))
    return IssuedToken(token_id=token_id, user_id=user_id, name=name[:64], token=token, expires_at=expires_at)


async def extend_tokens_named(*, sessions: async_sessionmaker, user_id: str, name: str,
                             expires_at: datetime) -> int:
    """Move the expiry of every active token of ``user_id`` called ``name``; how many were."""
    async with sessions.begin() as session:
        result = await session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.name == name, ApiToken.revoked_at.is_(None))
            .values(expires_at=expires_at)
        )
    return result.rowcount


async def revoke_tokens_named(*, sessions: async_sessionmaker, user_id: str, name: str) -> int:
    """Revoke every active token of ``user_id`` called ``name``; how many were."""
    async with sessions.begin() as session:
        result = await session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.name == name, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    return result.rowcount


async def revoke_token(*, sessions: async_sessionmaker, token_id: uuid.UUID) -> None:
    async with sessions.begin() as session:
        result = await session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        if result.rowcount == 0:
            raise UserError(f"no active token {token_id}")


async def list_tokens(*, sessions: async_sessionmaker, user_id: str | None = None) -> list[TokenInfo]:
    """Every token (or one user's), without anything secret: hashes stay in the database."""
    query = select(ApiToken).order_by(ApiToken.user_id, ApiToken.created_at)
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    async with sessions() as session:
        rows = (await session.scalars(query)).all()
    return [
        TokenInfo(
            token_id=r.id,
            user_id=r.user_id,
            name=r.name,
            created_at=r.created_at,
            last_used_at=r.last_used_at,
            revoked_at=r.revoked_at,
            expires_at=r.expires_at,
        )
        for r in rows
    ]


async def list_users(*, sessions: async_sessionmaker) -> list[User]:
    async with sessions() as session:
        return list((await session.scalars(select(User).order_by(User.id))).all())
