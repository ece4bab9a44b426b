"""Sending one message until Telegram takes it, or says it never will.

- 429: wait exactly ``retry_after`` (Telegram's own number), then send again;
- 5xx, network errors, timeouts, a refused bot token: wait with capped exponential backoff and
  send again, for as long as it takes (an alert is never dropped for a transient reason);
- a chat that does not exist, blocked the bot, or a message Telegram rejects: permanent.

A ``stop`` set while waiting ends the attempt as ``Interrupted`` (the caller leaves the offset
uncommitted, so a restart sends it); an HTTP request already in flight is allowed to finish, so
a message is never left half-sent by our own shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiogram import Bot
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)

from infra.metrics import telegram_send_retries_total

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sent:
    chat_id: int
    message_id: int


@dataclass(frozen=True)
class Refused:
    """Telegram will never take this message for this chat."""

    reason: str


@dataclass(frozen=True)
class Interrupted:
    pass


Outcome = Sent | Refused | Interrupted


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    retry_after_maximum: float = 600.0

    def delay(self, attempt: int) -> float:
        """Wait before attempt ``attempt + 1`` after a transient failure (attempt counts from 1)."""
        return min(self.maximum, self.initial * 2 ** max(0, attempt - 1))

    def retry_after(self, seconds: float) -> float:
        return min(max(seconds, 0.0), self.retry_after_maximum)


_PERMANENT = (TelegramBadRequest, TelegramForbiddenError, TelegramNotFound, TelegramEntityTooLarge)
_TRANSIENT = {
    TelegramServerError: "server_error",
    TelegramNetworkError: "network",
    TelegramUnauthorizedError: "unauthorized",
    ClientDecodeError: "server_error",
    TimeoutError: "network",
    OSError: "network",
}


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; True if stopped."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def _transient_reason(error: BaseException) -> str | None:
    for kind, reason in _TRANSIENT.items():
        if isinstance(error, kind):
            return reason
    return None


async def send(bot: Bot, *, chat_id: int, text: str, backoff: Backoff, stop: asyncio.Event) -> Outcome:
    attempt = 0
    while True:
        attempt += 1
        try:
            message = await bot.send_message(chat_id=chat_id, text=text)
            return Sent(chat_id=chat_id, message_id=message.message_id)
        except TelegramRetryAfter as error:
            telegram_send_retries_total.labels(reason="retry_after").inc()
            delay = backoff.retry_after(error.retry_after)
        except TelegramMigrateToChat as error:
            # The group became a supergroup: the same message goes to its new id at once.
            log.info("chat %s migrated to %s; sending there", chat_id, error.migrate_to_chat_id)
            chat_id, delay = error.migrate_to_chat_id, 0.0
        except _PERMANENT as error:
            return Refused(reason=f"{type(error).__name__}: {error.message}")
        except (TelegramAPIError, ClientDecodeError, TimeoutError, OSError) as error:
            reason = _transient_reason(error)
            if reason is None:  # an API error we do not know: treat as transient, never drop
                reason = "server_error"
            telegram_send_retries_total.labels(reason=reason).inc()
            delay = backoff.delay(attempt)
            log.warning(
                "Telegram send to chat %s failed (%s); attempt %d, retrying in %.1fs",
                chat_id,
                type(error).__name__,
                attempt,
                delay,
            )
        if await _wait(stop, delay):
            return Interrupted()
