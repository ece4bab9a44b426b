"""The broker's server clock: MT5 writes every time in it, labelled UTC. This finds its offset.

Most brokers keep UTC+2 in winter and UTC+3 in summer, switching with New York's daylight saving
so that their midnight is 17:00 New York ("new-york-close"). The offset is learned per terminal
from its quotes: while the feed moves, the latest tick's time minus the true time is the offset
less a few seconds of tick age, so it is rounded to the quarter hour (every real offset is a whole
quarter hour) and believed once ``CONFIRMATIONS`` polls in a row agree. It keeps being checked, so a
daylight-saving switch is seen within a few polls of the market's next quote. A configured rule
(``MarketSettings.server_clock`` / ``server_clocks``) overrides learning; until anything is learned
the assumed rule (``server_clock_assumed``) stands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from infra.settings.markets import NEW_YORK_CLOSE, fixed_offset_minutes

QUARTER_HOUR = 15  # minutes
#: A candidate further than this from a whole quarter hour is a stale tick, not an offset.
MAX_TICK_AGE_SECONDS = 120.0
CONFIRMATIONS = 3
#: Real server clocks run from UTC-12 to UTC+14; anything else is a terminal on another date.
MAX_OFFSET_MINUTES = 14 * 60
_NEW_YORK = ZoneInfo("America/New_York")


def rule_offset_minutes(rule: str, at: datetime) -> int:
    """The offset (server clock minus UTC) a fixed rule gives at true time ``at``."""
    fixed = fixed_offset_minutes(rule)
    if fixed is not None:
        return fixed
    if rule == NEW_YORK_CLOSE:
        return _new_york_close_in_hour(int(at.timestamp() // 3600))
    zone = ZoneInfo(rule)
    return _minutes(zone.utcoffset(at.astimezone(zone)))


@lru_cache(maxsize=64)
def _new_york_close_in_hour(hour: int) -> int:
    """The new-york-close offset through one whole hour of true UTC (hours since the epoch): New York
    changes its clocks at 02:00 local, a whole UTC hour, so the hour decides it. Asked per account
    and poll, where a time-zone conversion each time was a visible share of the poller's round."""
    return _minutes(_NEW_YORK.utcoffset(datetime.fromtimestamp(hour * 3600, UTC).astimezone(_NEW_YORK))) + 7 * 60


def _minutes(delta: timedelta | None) -> int:
    return round((delta or timedelta()).total_seconds() / 60)


def to_utc(server: datetime, offset_minutes: int) -> datetime:
    """A time the terminal wrote (server clock labelled UTC) as true UTC."""
    return server - _minutes_delta(offset_minutes) if offset_minutes else server


@lru_cache(maxsize=256)
def _minutes_delta(minutes: int) -> timedelta:
    return timedelta(minutes=minutes)


def server_clock_at(at: datetime, offset_minutes: int) -> datetime:
    """What the server clock reads at true time ``at``, labelled UTC as MT5 labels it."""
    return (at + _minutes_delta(offset_minutes)).astimezone(UTC)


@dataclass
class BrokerClock:
    """One terminal's clock: a rule (``auto`` learns it) and what has been learned so far."""

    rule: str = "auto"
    assumed: str = NEW_YORK_CLOSE
    learned: int | None = None
    candidate: int | None = None
    agreeing: int = 0
    last_tick_msc: int | None = None

    def offset_minutes(self, at: datetime) -> int:
        if self.rule != "auto":
            return rule_offset_minutes(self.rule, at)
        return self.learned if self.learned is not None else rule_offset_minutes(self.assumed, at)

    def observe(self, latest_tick_msc: int | None, at: datetime) -> None:
        """One poll: the newest quote time the terminal showed (server clock, ms) at true time ``at``."""
        if self.rule != "auto" or latest_tick_msc is None:
            return
        moved = self.last_tick_msc is not None and latest_tick_msc != self.last_tick_msc
        self.last_tick_msc = latest_tick_msc
        if not moved:  # a feed that does not move (a closed market) says nothing about now
            return
        seconds = latest_tick_msc / 1000 - at.timestamp()
        candidate = round(seconds / 60 / QUARTER_HOUR) * QUARTER_HOUR
        if abs(seconds - candidate * 60) > MAX_TICK_AGE_SECONDS or abs(candidate) > MAX_OFFSET_MINUTES:
            return
        self.agreeing = self.agreeing + 1 if candidate == self.candidate else 1
        self.candidate = candidate
        if self.agreeing >= CONFIRMATIONS:
            self.learned = candidate
