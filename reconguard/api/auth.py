"""Who is calling, and what they may read.

Rules: no or an unknown/revoked/expired token is 401; a trader reads only their own data (another
user's is 403, whether that user exists or not, so ids cannot be probed); an admin reads
everyone's and gets 404 for an unknown user. Tokens never reach a log line or an error body.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Path, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from infra.tables import ApiToken, User
from reconguard.api.deps import App, Session
from reconguard.users import USER_ID_PATTERN, hash_token
from schemas.envelope import utcnow

_MAX_TOKEN_LENGTH = 256
_LAST_USED_RESOLUTION = timedelta(minutes=1)

bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer <token>`")


@dataclass(frozen=True)
class Caller:
    user_id: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def _caller_for(session: AsyncSession, token: str) -> Caller | None:
    """The token's owner, None for an unknown or revoked token; 401 "expired" for an expired one."""
    query = (
        select(ApiToken, User.role)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    )
    row = (await session.execute(query)).first()
    if row is None:
        return None
    api_token, role = row
    now = utcnow()
    if api_token.expires_at is not None and api_token.expires_at <= now:
        raise _unauthorized("token expired: ask for a new one (`reconguard users token`)")
    # Recorded at most once a minute per token: a read should not cost a write each time.
    if api_token.last_used_at is None or now - api_token.last_used_at > _LAST_USED_RESOLUTION:
        await session.execute(update(ApiToken).where(ApiToken.id == api_token.id).values(last_used_at=now))
        await session.commit()
    return Caller(user_id=api_token.user_id, role=role)


async def current_caller(
    session: Session,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    if credentials is None:
        raise _unauthorized("missing bearer token (send Authorization: Bearer <token>)")
    token = credentials.credentials
    if not token or len(token) > _MAX_TOKEN_LENGTH or not token.isascii() or not token.isprintable():
        raise _unauthorized("invalid or revoked token")
    caller = await _caller_for(session, token)
    if caller is None:
        raise _unauthorized("invalid or revoked token")
    return caller


CurrentCaller = Annotated[Caller, Depends(current_caller)]
UserIdPath = Annotated[
    str, Path(description="The user (account owner) id", pattern=USER_ID_PATTERN, max_length=64)
]


def admin(caller: CurrentCaller) -> Caller:
    if not caller.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only an admin may do this")
    return caller


Admin = Annotated[Caller, Depends(admin)]


async def metrics_scraper(
    app: App, session: Session, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Prometheus with the metrics token (RECONGUARD_API_METRICS_TOKEN), or an admin; nobody else."""
    expected = app.settings.api.metrics_token
    if credentials is not None and expected is not None and secrets.compare_digest(
            credentials.credentials.encode(), expected.get_secret_value().encode()):
        return
    admin(await current_caller(session, credentials))


MetricsScraper = Depends(metrics_scraper)


async def readable_user(user_id: UserIdPath, caller: CurrentCaller, session: Session) -> User:
    """The user whose data is asked for, if the caller may read it."""
    if not caller.is_admin and caller.user_id != user_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="you may read only your own account")
    user = await session.get(User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user {user_id!r}")
    return user


ReadableUser = Annotated[User, Depends(readable_user)]
