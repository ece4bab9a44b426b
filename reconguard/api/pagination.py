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
from datetime import datetime

MAX_LIMIT = 500
DEFAULT_LIMIT = 100


class CursorError(ValueError):
    pass


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
    return cursor


def next_cursor(rows: list, *, limit: int) -> str | None:
    """The cursor after the last row, or None when this page was the last one."""
    if len(rows) < limit:
        return None
    last = rows[-1]
    return encode_cursor(Cursor(last.created_at, last.id))
