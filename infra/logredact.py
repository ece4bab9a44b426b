"""No secret in any log line, whatever library writes it.

Libraries log what they hold: aiogram's polling logger prints request URLs, and a Bot API URL
carries the bot token (``/bot<token>/getUpdates``); a client logs the URL it called, query string
and all; a driver may quote its DSN. So redaction cannot be left to each call site. ``install``
puts a ``RedactingFilter`` where every record passes: the log record factory (every record of the
process, of every logger, before any handler sees it), the root logger and its handlers, and the
loggers of the libraries that keep handlers of their own.

What is redacted: each secret the process was configured with (the bot token, the metrics token,
database passwords: ``add_secret``) wherever it appears, and whatever looks like one: a Telegram
bot token, a reconguard API token (``rg_…``), the credentials after ``Bearer``, a password in a
database URL or a ``password=`` parameter.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit

from infra.settings import Settings

MASK = "***"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A Telegram bot token: the bot's numeric id, a colon, 35 characters of base64url.
    (re.compile(r"(?<![0-9])\d{5,}:[A-Za-z0-9_-]{30,}"), MASK),
    # reconguard's own API tokens (reconguard.users.new_token).
    (re.compile(r"\brg_[A-Za-z0-9_-]{16,}"), MASK),
    # Whatever follows "Bearer" in a header or a message.
    (re.compile(r"(?i)\b(bearer\s+)[^\s,;\"']+"), r"\1" + MASK),
    # user:password@ in any URL (postgresql://, amqp://, https://).
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@"), r"\1" + MASK + "@"),
    # password=… in a keyword DSN or a query string.
    (re.compile(r"(?i)\b(password\s*=\s*)[^\s&;]+"), r"\1" + MASK),
)

_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def add_secret(secret: str | None) -> None:
    """Redact ``secret`` wherever it appears from now on (short strings are ignored: too many false hits)."""
    if secret and len(secret) >= 6:
        with _lock:
            _secrets.add(secret)


def add_database_url(url: str | None) -> None:
    """Redact the password of a database URL (the URL's own redaction is pattern-based anyway)."""
    if url:
        add_secret(urlsplit(url).password)


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and its traceback text) without secrets; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()  # formatted: None would be formatted again by mode's formatter
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = redact(text), None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._redacted = True  # type: ignore[attr-defined] - checked above: one pass per record
        return True


_FILTER = RedactingFilter()
#: Loggers of libraries that may carry handlers of their own (so a record could skip the root's).
LIBRARY_LOGGERS = ("aiogram", "aiogram.dispatcher", "aiogram.event", "aiokafka", "faust", "mode", "uvicorn",
                   "uvicorn.error", "uvicorn.access", "httpx", "httpcore", "asyncpg", "sqlalchemy", "alembic")


def install(secrets: Iterable[str | None] = ()) -> None:
    """Redact every log record of this process from now on; ``secrets`` are redacted verbatim too.

    Safe to call more than once (later calls add secrets and cover handlers added since)."""
    global _installed
    for secret in secrets:
        add_secret(secret)
    with _lock:
        if not _installed:
            _wrap_record_factory()
            _installed = True
    for logger in (logging.getLogger(), *(logging.getLogger(name) for name in LIBRARY_LOGGERS)):
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


def _wrap_record_factory() -> None:
    make = logging.getLogRecordFactory()

    def redacted_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make(*args, **kwargs)
        _FILTER.filter(record)
        return record

    logging.setLogRecordFactory(redacted_record)


def install_for(settings: Settings) -> None:
    """``install`` with the secrets of ``settings``: the bot token, the metrics token, the database password."""
    tokens = (settings.telegram.bot_token, settings.api.metrics_token)
    install(token.get_secret_value() for token in tokens if token is not None)
    add_database_url(settings.database_url)
