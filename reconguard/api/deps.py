"""Per-request access to what the app holds: a database session, the broker, the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.settings import Settings
from reconguard.api.broker import BrokerLink
from reconguard.api.ratelimit import SyncLimiter


@dataclass
class Resources:
    settings: Settings
    sessions: async_sessionmaker
    broker: BrokerLink
    sync_limiter: SyncLimiter


def resources(request: Request) -> Resources:
    return request.app.state.resources


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    async with resources(request).sessions() as db:
        yield db


Session = Annotated[AsyncSession, Depends(session)]
App = Annotated[Resources, Depends(resources)]
