"""Pure parts of the interfaces: the sync limit, cursors, Telegram backoff, token hashing."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconguard.api.pagination import Cursor, CursorError, decode_cursor, encode_cursor
from reconguard.api.ratelimit import SyncLimiter
from reconguard.telegram.sending import Backoff
from reconguard.users import UserError, check_user_id, hash_token, new_token


def _forged(moment: str) -> str:
    raw = json.dumps([moment, str(uuid.UUID(int=7))]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_sync_per_account_per_interval():
    clock = Clock()
    limiter = SyncLimiter(interval=10, clock=clock)
    assert limiter.acquire("a") == 0
    clock.now += 0.4
    assert limiter.acquire("a") == 10, "Retry-After rounds up: 9.6 s left is 10"
    assert limiter.acquire("b") == 0, "each account has its own slot"
    clock.now += 9.0
    assert limiter.acquire("a") == 1
    clock.now += 0.6
    assert limiter.acquire("a") == 0, "exactly 10 s later it is allowed again"


def test_a_released_slot_can_be_taken_at_once():
    limiter = SyncLimiter(interval=10, clock=Clock())
    assert limiter.acquire("a") == 0
    limiter.release("a")
    assert limiter.acquire("a") == 0


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(8999, 12, 31), timezones=st.just(UTC)),
       st.uuids())
def test_cursors_round_trip(moment, row_id):
    cursor = Cursor(moment, row_id)
    assert decode_cursor(encode_cursor(cursor)) == cursor


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("%%%", id="not base64"),
        pytest.param("W10", id="empty JSON list"),
        pytest.param(
            encode_cursor(Cursor(datetime(2026, 1, 1, tzinfo=UTC), uuid.uuid4()))[:-3], id="truncated"
        ),
        pytest.param(
            "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwiMDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwIl0",
            id="time without offset",
        ),
        pytest.param(_forged("0001-01-01T00:00:00+05:00"), id="year 1 with an offset (overflows UTC)"),
        pytest.param(_forged("9999-12-31T23:59:59-05:00"), id="year 9999 with an offset (overflows UTC)"),
        pytest.param(_forged("0001-01-01T00:00:00+00:00"), id="year 1 in UTC (outside the rows' range)"),
        pytest.param(_forged("9999-12-31T23:59:59+00:00"), id="year 9999 in UTC (outside the rows' range)"),
    ],
)
def test_forged_cursors_are_refused_clearly(text):
    with pytest.raises(CursorError, match="not one this API issued"):
        decode_cursor(text)


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [
        pytest.param(1, 0.5, id="first retry waits the initial delay"),
        pytest.param(2, 1.0, id="then doubles"),
        pytest.param(4, 4.0, id="and doubles again"),
        pytest.param(50, 30.0, id="never beyond the maximum"),
    ],
)
def test_backoff_doubles_up_to_its_cap(attempt, delay):
    assert Backoff(initial=0.5, maximum=30).delay(attempt) == delay


def test_retry_after_is_honoured_up_to_its_cap():
    backoff = Backoff(retry_after_maximum=600)
    assert backoff.retry_after(7) == 7 and backoff.retry_after(10_000) == 600 and backoff.retry_after(-1) == 0


def test_tokens_are_random_and_stored_as_sha256_hex():
    first, second = new_token(), new_token()
    assert first != second and first.startswith("rg_") and len(first) > 40
    assert (
        len(hash_token(first)) == 64 and hash_token(first) != first and hash_token(first) == hash_token(first)
    )


@pytest.mark.parametrize(
    "user_id",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 65, id="too long"),
        pytest.param("a/b", id="slash"),
        pytest.param("bob\x00", id="NUL"),
        pytest.param(" bob", id="leading space"),
    ],
)
def test_user_ids_the_api_could_not_address_are_refused(user_id):
    with pytest.raises(UserError):
        check_user_id(user_id)
