"""Keyset pagination: pages newest first, a cursor names the last row seen (time and id).

A cursor is opaque to callers (base64 of JSON); a forged or damaged one is a clear 400, never a
database error.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_LIMIT = 500
DEFAULT_LIMIT = 100


#: The instants the API accepts (filters, cursors): wide enough for any row, narrow enough that
#: converting to UTC and sending to PostgreSQL can never overflow (year 1 or 9999 with an offset).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class CursorError(ValueError):
    pass


class OutOfRange(ValueError):
    pass


def in_range(value: datetime) -> datetime:
    """``value`` in UTC, or OutOfRange if it lies outside [EARLIEST, LATEST)."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise OutOfRange(f"must lie between {EARLIEST.date()} and {LATEST.date()}") from None
    if not EARLIEST <= utc < LATEST:
        raise OutOfRange(f"must lie between {EARLIEST.date()} and {LATEST.date()}")
    return utc


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: uuid.UUID


def encode_cursor(cursor: Cursor) -> str:
    raw = json.dumps([cursor.created_at.isoformat(), str(cursor.id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created_at, row_id = json.loads(raw)
        cursor = Cursor(datetime.fromisoformat(created_at), uuid.UUID(row_id))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise CursorError(
            "cursor is not one this API issued; pass next_cursor from a previous page"
        ) from None
    if cursor.created_at.tzinfo is None:
        raise CursorError("cursor is not one this API issued; pass next_cursor from a previous page")
    try:
        return Cursor(in_range(cursor.created_at), cursor.id)
    except OutOfRange:
        raise CursorError("cursor is not one this API issued; pass next_cursor from a previous page") from None


def next_cursor(rows: list, *, limit: int) -> str | None:
    """The cursor after the last row, or None when this page was the last one."""
    if len(rows) < limit:
        return None
    last = rows[-1]
    return encode_cursor(Cursor(last.created_at, last.id))
