"""Guard profiles: the profiles an account can be given, and an admin's assignment of one."""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from reconguard.api.auth import Admin, CurrentCaller, UserIdPath
from reconguard.api.deps import App, Session
from reconguard.guard_profiles import assign_profile
from reconguard.users import UserError

router = APIRouter(tags=["guard profiles"])

_UNAUTHORISED = {401: {"description": "No, unknown or revoked token"}}
_FORBIDDEN = {403: {"description": "Not an admin"}}


class GuardProfilePublic(BaseModel):
    name: str
    version: int
    family: str
    description: str
    rules: dict[str, object] = Field(description="The profile's fields (docs/guard-rules.md, 'Guard profiles')")


class ProfileAssignment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str = Field(min_length=1, max_length=64, description="A name GET /guard-profiles lists")
    # A JSON number, as every number at our doors (no text); within the column's NUMERIC(18, 4).
    initial_balance_gbp: float | None = Field(default=None, gt=0, lt=1e14, allow_inf_nan=False, strict=True,
                                              description="What prop-firm profiles measure from")


class ProfileAssignedPublic(BaseModel):
    user_id: str
    profile: str
    version: int
    initial_balance_gbp: Decimal | None


@router.get("/guard-profiles", response_model=list[GuardProfilePublic], responses=_UNAUTHORISED)
async def list_profiles(caller: CurrentCaller, app: App) -> list[GuardProfilePublic]:
    """The guard profiles defined in the settings, with their versions."""
    return [GuardProfilePublic(name=name, version=p.version, family=p.family.value, description=p.description,
                               rules=p.model_dump(mode="json", exclude={"version", "family", "description"}))
            for name, p in sorted(app.settings.guard.profiles.items())]


@router.put("/users/{user_id}/guard-profile", response_model=ProfileAssignedPublic,
            responses=_UNAUTHORISED | _FORBIDDEN | {404: {"description": "No such user"},
                                                    400: {"description": "No such profile"}})
async def set_profile(user_id: UserIdPath, body: ProfileAssignment, caller: Admin, session: Session, app: App
                      ) -> ProfileAssignedPublic:
    """Give the account a guard profile (admins only); the worker uses it from its next levels refresh."""
    guard = app.settings.guard
    if body.profile not in guard.profiles:
        raise HTTPException(400,
                            detail=f"no guard profile {body.profile!r}; known: {', '.join(sorted(guard.profiles))}")
    try:
        await assign_profile(session, user_id=user_id, profile=body.profile, guard=guard,
                             initial_balance_gbp=_money(body.initial_balance_gbp))
    except UserError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(error)) from None
    return ProfileAssignedPublic(user_id=user_id, profile=body.profile, version=guard.profiles[body.profile].version,
                                 initial_balance_gbp=_money(body.initial_balance_gbp))


def _money(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(round(value, 4)))
