"""The market calendar: FX week in New York time across both DST gaps, breaks, holidays, next_open."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from infra.sessions import is_open, next_open, open_throughout, trading_day
from infra.settings import GuardSettings, Settings
from infra.settings.markets import MarketSettings

MARKETS = MarketSettings()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize("description, sunday_open_utc", [
    ("winter: 17:00 New York is 22:00 UTC", "2026-01-11T22:00"),
    ("New York on summer time, Europe not yet: 21:00 UTC", "2026-03-15T21:00"),
    ("Europe back on winter time, New York not yet: 21:00 UTC", "2026-10-25T21:00"),
    ("both on winter time again", "2026-11-08T22:00"),
])
def test_the_fx_week_opens_at_17_00_new_york_whatever_europe_does(description, sunday_open_utc):
    opening = utc(sunday_open_utc)
    assert next_open(MARKETS, "EURUSD", utc(sunday_open_utc[:10] + "T12:00")) == opening, description
    an_hour_before = opening.replace(hour=opening.hour - 1)
    assert is_open(MARKETS, "EURUSD", opening) and not is_open(MARKETS, "EURUSD.r", an_hour_before)


def test_next_open_takes_the_whole_settings_or_a_section():
    friday_night = utc("2026-11-06T23:00")
    expected = utc("2026-11-08T22:00")
    assert next_open(Settings(), "EURUSD", friday_night) == expected
    assert next_open(GuardSettings(), "EURUSD", friday_night) == expected
    assert next_open(MARKETS, "BTCUSD", friday_night) == friday_night  # crypto never closes


def test_a_holiday_on_a_friday_runs_into_the_weekend():
    assert next_open(MARKETS, "US30.cash", utc("2026-12-24T22:30")) == utc("2026-12-27T23:00")
    assert trading_day(MARKETS, utc("2026-12-24T22:30")).isoformat() == "2026-12-25"


def test_open_throughout_sees_a_break_between_two_quotes():
    assert open_throughout(MARKETS, "EURUSD", utc("2026-12-02T21:30"), utc("2026-12-02T22:30"))
    assert not open_throughout(MARKETS, "XAUUSD#", utc("2026-12-02T21:30"), utc("2026-12-02T23:30"))


def test_an_unknown_asset_class_is_refused_at_start():
    with pytest.raises(ValueError, match="without session hours"):
        MarketSettings(symbol_classes={"EURUSD": "bonds"})


def test_a_copy_with_other_classes_answers_from_its_own_calendar():
    markets = MarketSettings()
    assert markets.hours("BTCUSD.r") != markets.hours("EURUSD")  # asked: the answers are remembered
    fx_only = markets.model_copy(update={"symbol_classes": {}})
    assert fx_only.hours("BTCUSD.r") == fx_only.hours("EURUSD"), "not the original's remembered answer"
    assert markets.hours("BTCUSD.r") != markets.hours("EURUSD")
