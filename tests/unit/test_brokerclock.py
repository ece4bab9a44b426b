"""The broker clock: learned from moving quotes, rounded to the quarter hour, following DST switches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from infra.brokerclock import BrokerClock, rule_offset_minutes, server_clock_at, to_utc


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize("description, at, minutes", [
    ("winter", "2026-01-15T12:00", 120),
    ("New York switched on 8 March, Europe not until 29 March: already UTC+3", "2026-03-15T12:00", 180),
    ("summer", "2026-07-01T12:00", 180),
    ("Europe switched back on 25 October, New York not until 1 November: still UTC+3", "2026-10-28T12:00", 180),
    ("after New York's switch on 1 November", "2026-11-02T12:00", 120),
])
def test_new_york_close_brokers_are_utc_plus_2_or_3_with_new_yorks_dst(description, at, minutes):
    assert rule_offset_minutes("new-york-close", utc(at)) == minutes, description
    europe = rule_offset_minutes("Europe/Athens", utc(at))  # a broker on Athens time differs in the gaps
    assert (europe == minutes) == (description.startswith(("winter", "summer", "after"))), description


def test_fixed_and_zone_rules():
    assert rule_offset_minutes("UTC+02:00", utc("2026-07-01T00:00")) == 120
    assert rule_offset_minutes("UTC-03:30", utc("2026-07-01T00:00")) == -210


def learn(clock: BrokerClock, offset_minutes: int, start: datetime, polls: int, *, lag: float = 0.7) -> None:
    """Polls one second apart; the feed's newest quote is ``lag`` seconds old each time."""
    for i in range(polls):
        now = start + timedelta(seconds=i)
        tick = server_clock_at(now - timedelta(seconds=lag), offset_minutes)
        clock.observe(round(tick.timestamp() * 1000), now)


def test_the_offset_is_learned_from_a_moving_feed_and_a_dst_switch_is_seen_within_polls():
    clock = BrokerClock()
    sunday = utc("2026-11-01T22:00")
    assert clock.offset_minutes(sunday) == 120  # assumed until learned
    learn(clock, 180, sunday - timedelta(days=3), 5)
    assert clock.learned == 180
    learn(clock, 120, sunday, 5)  # the market reopens after New York's switch
    assert clock.learned == 120


def test_a_frozen_feed_teaches_nothing():
    clock = BrokerClock()
    friday = utc("2026-11-06T21:59")
    frozen = round(server_clock_at(friday, 120).timestamp() * 1000)
    for hours in range(1, 40):
        clock.observe(frozen, friday + timedelta(hours=hours))
    assert clock.learned is None


def test_a_configured_rule_overrides_learning():
    clock = BrokerClock(rule="UTC+00:00")
    learn(clock, 180, utc("2026-07-01T10:00"), 5)
    assert clock.offset_minutes(utc("2026-07-01T10:00")) == 0


def test_server_times_back_to_true_utc():
    server = utc("2026-07-01T15:00")
    assert to_utc(server, 180) == utc("2026-07-01T12:00")


def test_new_york_close_looked_up_by_the_hour_is_the_zone_conversion_at_every_instant():
    """The offset is remembered per UTC hour: New York's switches fall on whole UTC hours, so every
    second around them reads exactly as the zone conversion does."""
    from zoneinfo import ZoneInfo

    new_york = ZoneInfo("America/New_York")
    switches = ["2024-03-10T07:00", "2024-11-03T06:00", "2026-03-08T07:00", "2026-11-01T06:00", "2031-03-09T07:00"]
    for switch in switches:
        for seconds in [*range(-7200, 7200, 59), -1, 0, 1]:
            at = utc(switch) + timedelta(seconds=seconds, microseconds=999_999 if seconds == -1 else 0)
            direct = round(new_york.utcoffset(at.astimezone(new_york)).total_seconds() / 60) + 7 * 60
            assert rule_offset_minutes("new-york-close", at) == direct, at
