"""Per-account guard levels from the ``users`` table, loaded at start and refreshed periodically.

Only an admin changes a user's levels (in the database or through the API); the worker picks the
change up at the next refresh. An account with no row, or a database that cannot be read, gets
the defaults (5 / 10 / 5 %, 10 s, profile ``default``); a failed refresh keeps the last levels it read.
The profile is a name in ``GuardSettings.profiles``: the rules resolve it (an unknown name takes ``default``).
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from infra.dburl import plain_url
from infra.settings import DEFAULT_LEVELS, AccountLevels

log = logging.getLogger(__name__)

_QUERY = """SELECT id, warning_drawdown_percent, critical_drawdown_percent, daily_loss_limit_percent,
                   close_grace_seconds, guard_profile, initial_balance_gbp FROM users"""


class AccountLevelsBook:
    #: A user not seen at the last read is looked up again at most this often (a user just added).
    RECHECK_SECONDS = 1.0

    def __init__(self, database_url: str | None) -> None:
        self.database_url = database_url
        self.levels: dict[str, AccountLevels] = {}
        self.loaded = asyncio.Event()
        self.read_once = False  # whether ``levels`` is the users table (not just the defaults)
        self._read_at = 0.0

    async def knows(self, account_id: str) -> bool:
        """Whether ``account_id`` is a user; True while the table has never been read (no verdict)."""
        if account_id in self.levels or not self.read_once:
            return True
        if time.monotonic() - self._read_at >= self.RECHECK_SECONDS:
            await self.refresh()
        return account_id in self.levels

    def get(self, account_id: str) -> AccountLevels:
        return self.levels.get(account_id, DEFAULT_LEVELS)

    async def refresh(self) -> None:
        if self.database_url is None:
            self.loaded.set()
            return
        try:
            self._read_at = time.monotonic()
            self.levels = await read_levels(self.database_url)
            self.read_once = True
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as error:
            log.warning("could not read guard levels from users (%s); keeping %d known", error, len(self.levels))
        finally:
            self.loaded.set()

    async def ready(self, timeout: float = 10.0) -> None:
        if not self.loaded.is_set():
            try:
                await asyncio.wait_for(self.loaded.wait(), timeout)
            except asyncio.TimeoutError:
                log.warning("guard levels not loaded after %.0fs; using defaults meanwhile", timeout)
                self.loaded.set()


async def read_levels(database_url: str) -> dict[str, AccountLevels]:
    connection = await asyncpg.connect(plain_url(database_url), timeout=5)
    try:
        rows = await connection.fetch(_QUERY, timeout=5)
    finally:
        await connection.close()
    return {row["id"]: AccountLevels(
        warning_drawdown_percent=float(row["warning_drawdown_percent"]),
        critical_drawdown_percent=float(row["critical_drawdown_percent"]),
        daily_loss_limit_percent=float(row["daily_loss_limit_percent"]),
        close_grace_seconds=float(row["close_grace_seconds"]), profile=row["guard_profile"],
        initial_balance_gbp=None if row["initial_balance_gbp"] is None else float(row["initial_balance_gbp"]))
        for row in rows}
