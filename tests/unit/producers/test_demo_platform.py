"""The platform's way in: payloads from JSON, and ids stable per approval."""

from __future__ import annotations

import pytest

from producers.platform import approval_event_id, expectation_from_json, expected_trade
from schemas import DecodeError
from schemas.platform import TradeApproved, TradeClosedByPlatform

APPROVED = ('{"signal_id": "sig-42", "approval_id": "apr-42", "user_id": "u-alice", "symbol": "EURUSD", '
            '"direction": "buy", "volume": 0.5, "entry_price": 1.0951, "stop_loss": 1.0921}')


def test_an_approval_is_read_from_json_and_keyed_by_its_user() -> None:
    trade = expectation_from_json(APPROVED)
    assert isinstance(trade, TradeApproved)
    envelope = expected_trade(trade)
    assert (envelope.account_id, envelope.event_type) == ("u-alice", "TradeApproved")


def test_the_same_approval_gets_the_same_event_id() -> None:
    assert expected_trade(expectation_from_json(APPROVED)).event_id == \
        expected_trade(expectation_from_json(APPROVED)).event_id
    other = expectation_from_json(APPROVED.replace("apr-42", "apr-43"))
    assert approval_event_id(other) != approval_event_id(expectation_from_json(APPROVED))


def test_a_platform_close_is_read_from_json() -> None:
    close = expectation_from_json('{"signal_id": "sig-42", "approval_id": "apr-42", "user_id": "u-alice"}')
    assert isinstance(close, TradeClosedByPlatform)
    assert approval_event_id(close) != approval_event_id(expectation_from_json(APPROVED))


@pytest.mark.parametrize("raw", [
    pytest.param(APPROVED.replace('"stop_loss": 1.0921', '"stop_loss": 1.2'), id="stop on the wrong side"),
    pytest.param(APPROVED.replace('"volume": 0.5', '"volume": -1'), id="negative volume"),
    pytest.param(APPROVED.replace('"symbol"', '"symbl"'), id="a misspelt field is refused, not ignored"),
    pytest.param(APPROVED.replace('"volume": 0.5', '"volume": "0.5"'), id="a number as text (strict, as the schema)"),
    pytest.param(APPROVED.replace('"volume": 0.5', '"volume": true'), id="a boolean for a number"),
    pytest.param(APPROVED[:-3], id="malformed JSON"),
])
def test_bad_approvals_are_refused_before_anything_is_sent(raw: str) -> None:
    with pytest.raises(DecodeError):
        expectation_from_json(raw)
