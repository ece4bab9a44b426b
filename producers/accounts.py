"""Which MT5 accounts the producers serve: the users with an MT5 login, or an explicit list (demo).

An account's key on every topic is its user's id: one MT5 account per user.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from projections.models import User
from reconguard.db import make_engine


@dataclass(frozen=True, slots=True)
class AccountRef:
    """One MT5 account as the producers address it."""

    user_id: str
    login: int
    server: str
    currency: str | None = None


def account_refs(rows: Iterable[tuple[str, int | None, str | None, str | None]]) -> list[AccountRef]:
    """Refs of the rows (id, mt5_login, mt5_server, account_currency) that name an MT5 account."""
    return [AccountRef(user_id, int(login), server, currency)
            for user_id, login, server, currency in rows if login is not None and server]


async def load_accounts(*, database_url: str) -> list[AccountRef]:
    """Every user with an MT5 login and server, in id order."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                select(User.id, User.mt5_login, User.mt5_server, User.account_currency).order_by(User.id))
            return account_refs(result.all())
    finally:
        await engine.dispose()
