"""Reports v2 carry true UTC beside the server times; v1 reports are still read, unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from schemas import decode, encode, observed
from schemas.reports import AccountReport, MoneyFlow, MoneyFlowKind, PositionReport, TickReport
from schemas.topics import ACCOUNT_REPORTS, POSITION_REPORTS, TICKS

AT = datetime(2026, 7, 6, 10, 0, tzinfo=UTC)


def as_v1(envelope: object) -> bytes:
    data = json.loads(encode(envelope))  # type: ignore[arg-type]
    data["schema_version"] = 1
    for name in ("server_quoted_at", "digits", "server_offset_minutes", "credit", "positions_profit",
                 "money_flows", "gbp_rate_inverse"):
        data["payload"].pop(name, None)
    return json.dumps(data).encode()


@pytest.mark.parametrize("description, topic, payload", [
    ("a tick", TICKS, TickReport(symbol="EURUSD", bid=1.1, ask=1.1001, point=0.00001, quoted_at=AT)),
    ("an account", ACCOUNT_REPORTS, AccountReport(
        user_id="u1", login=1, server="S", currency="USD", poll_seq=1, balance=1.0, equity=1.0, profit=0.0,
        margin=0.0, margin_free=1.0, margin_level=0.0, gbp_rate=0.8, server_time=AT + timedelta(hours=3))),
    ("positions", POSITION_REPORTS, PositionReport(user_id="u1", login=1, poll_seq=1, positions=())),
])
def test_a_v1_report_is_upcast_with_its_times_unchanged(description, topic, payload):
    envelope = observed(payload, account_id="u1", occurred_at=AT)
    decoded = decode(topic, as_v1(envelope))
    assert decoded.schema_version == 2, description
    assert decoded.payload == payload, description


def test_a_v2_account_report_round_trips_with_its_flows():
    flow = MoneyFlow(ticket=9, kind=MoneyFlowKind.BALANCE, amount=-100.0, amount_gbp=-80.0, time=AT,
                     server_time=AT + timedelta(hours=3), comment="Withdrawal")
    report = AccountReport(user_id="u1", login=1, server="S", currency="USD", poll_seq=1, balance=900.0,
                           equity=900.0, profit=0.0, margin=0.0, margin_free=900.0, margin_level=0.0, gbp_rate=0.8,
                           server_time=AT + timedelta(hours=3), server_offset_minutes=180, positions_profit=0.0,
                           money_flows=(flow,))
    envelope = observed(report, account_id="u1", occurred_at=AT)
    assert decode(ACCOUNT_REPORTS, encode(envelope)) == envelope


def test_a_tick_knows_its_digits_even_from_v1():
    assert TickReport(symbol="XAUUSD", bid=2030.0, ask=2030.25, point=0.01, quoted_at=AT).price_digits == 2
    assert TickReport(symbol="USDJPY", bid=145.0, ask=145.01, point=0.001, digits=3, quoted_at=AT).price_digits == 3
