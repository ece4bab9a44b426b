"""The contract every long-running service keeps, so `reconguard run` can start them together.

A service is ``async def serve(settings: Settings, *, stop: asyncio.Event) -> None``: it runs
until ``stop`` is set, then finishes its current batch, commits, closes its clients and returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol

from reconguard.settings import Settings


class Service(Protocol):
    def __call__(self, settings: Settings, *, stop: asyncio.Event) -> Awaitable[None]: ...

