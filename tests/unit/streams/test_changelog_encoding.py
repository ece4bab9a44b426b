"""Changelog records are encoded by pydantic's serializer, and read back by Faust's codec as before."""

from __future__ import annotations

import json
import math

import pytest
from faust.serializers import codecs

from infra.internals import _dumps
from infra.settings import DEFAULT_LEVELS, Settings
from streams.drawdown import rules as drawdown
from streams.drawdown.state import DrawdownState
from streams.market import rules as market
from streams.reconciliation import rules as reconciliation
from streams.reconciliation.state import ReconciliationState
from streams.state import dump_state
from tests.unit.streams import builders as b


def _states() -> list[object]:
    """A drawdown, market and reconciliation state after half a minute of readings of two positions."""
    guard = Settings().guard
    dd, mk, rc = DrawdownState(), market.MarketState(), ReconciliationState()
    for t in range(1, 30):
        report = b.positions(b.position(1001), b.position(1002, symbol="GBPUSD"), t=t)
        dd = drawdown.handle(dd, b.account(10_000.0 - 3.3 * t, t=t), DEFAULT_LEVELS, guard, b.at(t)).state
        dd = drawdown.handle(dd, report, DEFAULT_LEVELS, guard, b.at(t)).state
        mk, rc = market.handle(mk, report, guard).state, reconciliation.handle(rc, report, guard).state
    return [dd, mk, rc]


@pytest.mark.parametrize("state", _states(), ids=lambda s: type(s).__name__)
def test_a_table_row_reads_back_as_faust_wrote_it(state):
    row = {"partition": 3, "state": dump_state(state)}
    assert codecs.loads("json", _dumps("json", row)) == codecs.loads("json", codecs.dumps("json", row)) == row


@pytest.mark.parametrize("key", ["load-00042", "trader-é", 'quote"and\\slash'])
def test_a_key_is_the_same_bytes_as_faust_writes(key):
    assert _dumps("json", key) == codecs.dumps("json", key)


def test_what_json_spells_apart_reads_back_the_same():
    row = {"peak": math.inf, "low": -math.inf, "tiny": 1e-05, "huge": 1e16, "text": "€ \u2028", "none": None}
    assert _dumps("json", row).isascii()
    assert json.loads(_dumps("json", row)) == json.loads(codecs.dumps("json", row))


def test_other_serializers_are_faust_s():
    assert _dumps("raw", b"bytes") == codecs.dumps("raw", b"bytes")
