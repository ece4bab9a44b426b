"""/status in Telegram: a chat sees the account linked to it, and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiogram import Bot, Dispatcher, Router
from aiogram.filters import Command, CommandStart
from aiogram.types import Message
from sqlalchemy.ext.asyncio import async_sessionmaker

from infra.tables import AccountLockEvent
from reconguard.api import lock_queries, queries
from reconguard.telegram.messages import NOT_LINKED, status_text
from reconguard.telegram.relay import account_label
from reconguard.telegram.sending import Backoff
from schemas.locks import LockEnd, LockKind

log = logging.getLogger(__name__)


async def status_reply(*, sessions: async_sessionmaker, chat_id: int) -> str:
    async with sessions() as session:
        user = await queries.user_for_chat(session, chat_id=chat_id)
        if user is None:
            return NOT_LINKED
        snapshot = await queries.latest_snapshot(session, user_id=user.id)
        divergences = await queries.open_divergence_count(session, user_id=user.id)
        lock = await lock_queries.current_lock(session, user_id=user.id)
    text = status_text(account=account_label(user), snapshot=snapshot, open_divergences=divergences)
    return f"{text}\n{lock_line(lock)}"


def lock_line(lock: AccountLockEvent | None) -> str:
    """Whether the account may trade: locked after a liquidation (and until when), or not."""
    if lock is None:
        return "Trading: open (not locked)"
    until = "the next broker day" if lock.ends == LockEnd.NEXT_BROKER_DAY else "an admin unlocks it"
    kind = "drawdown" if lock.kind == LockKind.DRAWDOWN else "daily loss"
    return (f"🔒 <b>Locked</b> since {lock.created_at:%Y-%m-%d %H:%M} UTC after the {kind} guard's liquidation: "
            f"new positions are closed until {until}")


def make_router() -> Router:
    router = Router(name="reconguard-status")

    @router.message(Command("status"))
    async def on_status(message: Message, sessions: async_sessionmaker) -> None:
        await message.answer(await status_reply(sessions=sessions, chat_id=message.chat.id))

    @router.message(CommandStart())
    @router.message(Command("help"))
    async def on_start(message: Message) -> None:
        await message.answer(
            f"reconguard sends this chat its account's guard alerts and closes.\n"
            f"/status shows the account's equity, drawdown, open divergences and whether it is locked.\n"
            f"This chat's id is {message.chat.id}.",
            parse_mode=None,
        )

    return router


async def answer_status(
    bot: Bot, *, sessions: async_sessionmaker, polling_timeout: int, backoff: Backoff, stop: asyncio.Event
) -> None:
    """Long-poll getUpdates and answer commands until ``stop``; restarts polling after failures."""
    dispatcher = Dispatcher()
    dispatcher.include_router(make_router())
    attempt = 0
    while not stop.is_set():
        polling = asyncio.create_task(
            dispatcher.start_polling(
                bot,
                handle_signals=False,
                close_bot_session=False,
                handle_as_tasks=False,
                polling_timeout=polling_timeout,
                sessions=sessions,
            )
        )
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({polling, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping in done:
            await _stop_polling(dispatcher, polling)
            return
        stopping.cancel()
        attempt += 1
        log.warning("Telegram polling ended (%s); restarting", _failure(polling))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=backoff.delay(attempt))


async def _stop_polling(dispatcher: Dispatcher, polling: asyncio.Task[None]) -> None:
    try:
        await dispatcher.stop_polling()
    except RuntimeError:  # not started yet
        polling.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await polling


def _failure(task: asyncio.Task[None]) -> str:
    error = task.exception()
    return "no error" if error is None else type(error).__name__
