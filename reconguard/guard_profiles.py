"""Assigning a guard profile to an account (`reconguard users profile` and the API call this).

The profile is stored by name in ``users.guard_profile``; the worker reads it with the levels at its
next refresh and resolves it in ``GuardSettings.profiles``, so every decision records the version in
force when it was made. Only names the settings define are accepted.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from infra.settings import GuardSettings
from infra.tables import User
from reconguard.users import UserError
from schemas.envelope import utcnow


async def assign_profile(session: AsyncSession, *, user_id: str, profile: str, guard: GuardSettings,
                         initial_balance_gbp: Decimal | None = None) -> None:
    """Set the account's profile (and, when given, the initial balance its prop-firm rules measure from)."""
    if profile not in guard.profiles:
        raise UserError(f"no guard profile {profile!r}; known: {', '.join(sorted(guard.profiles))}")
    if initial_balance_gbp is not None and initial_balance_gbp <= 0:
        raise UserError("the initial balance must be positive")
    values: dict[str, object] = {"guard_profile": profile, "updated_at": utcnow()}
    if initial_balance_gbp is not None:
        values["initial_balance_gbp"] = initial_balance_gbp
    result = await session.execute(update(User).where(User.id == user_id).values(**values))
    await session.commit()
    if result.rowcount == 0:
        raise UserError(f"no user {user_id!r}")
