"""When a symbol's market is open: the calendar of ``MarketSettings`` as answers about true UTC times.

Pure functions over a symbol's session hours (``infra/settings/markets.py``). Each local day of the
calendar's zone is cut into open intervals (the week, less its daily breaks and its holidays), turned
into UTC once and memoised, so the rules can ask on every quote:

- ``is_open(markets, symbol, at)``: whether the market trades at ``at``;
- ``open_throughout(markets, symbol, start, end)``: open at every moment of [start, end] (two quotes of
  the same session);
- ``session_at(markets, symbol, at)``: the session holding ``at`` itself, so a rule that asks both of one
  quote looks the calendar up once;
- ``next_open(settings, symbol, at)``: ``at`` itself when open, else the next session's first moment
  (the close executor retries a "market closed" refusal then).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from infra.settings.markets import WEEKDAYS, MarketSettings, SessionHours

_DAY = 1440  # minutes
_WEEK = 7 * _DAY
#: How far ``next_open`` looks ahead: longer than any weekend plus a run of holidays.
HORIZON_DAYS = 21
#: How far back a session may have begun (a whole week with no break).
LOOKBACK_DAYS = 9

Interval = tuple[datetime, datetime]  # [start, end) in UTC
#: The one session of a market that never closes: every time is within it.
ALWAYS: Interval = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))


def is_open(markets: MarketSettings, symbol: str, at: datetime) -> bool:
    hours = markets.hours(symbol)
    if hours.always_open:
        return True
    return _containing(markets, hours, at) is not None


def open_throughout(markets: MarketSettings, symbol: str, start: datetime, end: datetime) -> bool:
    """Open at every moment from ``start`` to ``end`` (inclusive): the two belong to one session."""
    hours = markets.hours(symbol)
    if hours.always_open:
        return True
    first, last = min(start, end), max(start, end)
    session = _containing(markets, hours, first)
    return session is not None and last < session[1]


def session_at(markets: MarketSettings, symbol: str, at: datetime) -> Interval | None:
    """The open session holding ``at`` (``ALWAYS`` for a market that never closes), None while closed.

    Sessions do not overlap, so [a, b] lies in this session exactly when ``start <= a`` and ``b < end``:
    ``open_throughout`` of two times around ``at`` without a second lookup (the market guard's quotes)."""
    memo, key = markets.__pydantic_private__["_memo"], ("session", symbol)  # type: ignore[index]
    last = memo.get(key)  # a symbol's quotes come in time order: its last session usually holds
    if last is not None and last[0] <= at < last[1]:
        return last  # type: ignore[no-any-return]
    hours = markets.hours(symbol)
    found = ALWAYS if hours.always_open else _containing(markets, hours, at)
    if found is not None:
        memo[key] = found
    return found


def next_open(settings: object, symbol: str, at: datetime) -> datetime | None:
    """``at`` when the market is open then, else the start of its next session (None: none in three
    weeks). ``settings``: the whole ``Settings``, its ``guard`` section or the ``MarketSettings``."""
    markets = _markets_of(settings)
    hours = markets.hours(symbol)
    if hours.always_open or _containing(markets, hours, at) is not None:
        return at
    day = _local_day(markets, at)
    for offset in range(HORIZON_DAYS):
        for start, _ in _sessions(markets, hours, day + timedelta(days=offset)):
            if start > at:
                return start
    return None


def trading_day(markets: MarketSettings, at: datetime) -> date:
    """The trading day of ``at``: the local date, rolled over at ``markets.rollover``."""
    local = at.astimezone(ZoneInfo(markets.timezone))
    roll = markets.rollover
    return (local + timedelta(hours=24 - roll.hour, minutes=-roll.minute)).date()


def _markets_of(settings: object) -> MarketSettings:
    if isinstance(settings, MarketSettings):
        return settings
    guard = getattr(settings, "guard", settings)
    markets = getattr(guard, "markets", None)
    if not isinstance(markets, MarketSettings):
        raise TypeError(f"no market calendar in {type(settings).__name__}")
    return markets


def _local_day(markets: MarketSettings, at: datetime) -> date:
    return at.astimezone(_context(markets)[0]).date()


def _memo(markets: MarketSettings) -> dict[object, object]:
    """The settings' own memo of derived values (read past pydantic's slow private-attribute path)."""
    return markets.__pydantic_private__["_memo"]  # type: ignore[index]


def _context(markets: MarketSettings) -> tuple[ZoneInfo, int, frozenset[date]]:
    """The calendar's zone, rollover minute and holidays, worked out once per settings object."""
    memo = _memo(markets)
    found = memo.get("calendar")
    if found is None:
        roll = markets.rollover
        found = memo["calendar"] = (ZoneInfo(markets.timezone), roll.hour * 60 + roll.minute,
                                    frozenset(markets.holidays))
    return found  # type: ignore[return-value]


def _week(hours: SessionHours) -> tuple[int, int, tuple[tuple[int, int], ...]]:
    """(opens, closes) minutes of the week and the daily breaks in minutes: a cheap hash key."""
    return (WEEKDAYS.index(hours.week_opens[0]) * _DAY + _minutes(hours.week_opens[1]),
            WEEKDAYS.index(hours.week_closes[0]) * _DAY + _minutes(hours.week_closes[1]),
            tuple((_minutes(a), _minutes(b)) for a, b in hours.daily_breaks))


def _containing(markets: MarketSettings, hours: SessionHours, at: datetime) -> Interval | None:
    """The merged open interval holding ``at`` (sessions run across local midnights)."""
    memo, key = _memo(markets), ("last", id(hours))
    last = memo.get(key)  # quotes come in time order: the session of the last question usually holds
    if last is not None and last[0] <= at < last[1]:  # type: ignore[index]
        return last  # type: ignore[return-value]
    day = _local_day(markets, at)
    for back in range(LOOKBACK_DAYS):  # a session is listed under the day it starts
        for start, end in reversed(_sessions(markets, hours, day - timedelta(days=back))):
            if start <= at:  # the latest session begun by then: open if it has not ended
                if at >= end:
                    return None
                memo[key] = (start, end)
                return start, end
    return None


def _sessions(markets: MarketSettings, hours: SessionHours, day: date) -> tuple[Interval, ...]:
    """Open intervals that start on local ``day``, each merged with what follows it on later days."""
    memo = _memo(markets)
    zone, rollover, holidays = _context(markets)
    week = memo.get(id(hours))  # type: ignore[call-overload]
    if week is None:
        week = memo[id(hours)] = _week(hours)  # type: ignore[index]
    return _sessions_cached(zone, rollover, holidays, week, day)  # type: ignore[arg-type]


Week = tuple[int, int, tuple[tuple[int, int], ...]]


@lru_cache(maxsize=8192)
def _sessions_cached(zone: ZoneInfo, rollover: int, holidays: frozenset[date], hours: Week,
                     day: date) -> tuple[Interval, ...]:
    result: list[Interval] = []
    pieces = _open_minutes(rollover, holidays, hours, day)
    for start, end in pieces:
        if start == 0 and _ends_at_midnight(rollover, holidays, hours, day - timedelta(days=1)):
            continue  # the session began on an earlier day: reported there
        if end == _DAY:  # runs on past midnight: follow it to its real end
            end_day, end = day, _DAY
            while end == _DAY:
                end_day += timedelta(days=1)
                following = _open_minutes(rollover, holidays, hours, end_day)
                end = following[0][1] if following and following[0][0] == 0 else 0
            result.append((_utc(zone, day, start), _utc(zone, end_day, end)))
        else:
            result.append((_utc(zone, day, start), _utc(zone, day, end)))
    return tuple(result)


def _ends_at_midnight(rollover: int, holidays: frozenset[date], hours: Week, day: date) -> bool:
    pieces = _open_minutes(rollover, holidays, hours, day)
    return bool(pieces) and pieces[-1][1] == _DAY


@lru_cache(maxsize=8192)
def _open_minutes(rollover: int, holidays: frozenset[date], hours: Week, day: date) -> tuple[tuple[int, int], ...]:
    """Open [start, end) minutes of one local day: the week, less the daily breaks and holidays."""
    base = day.weekday() * _DAY
    opens, closes, breaks = hours
    closed: list[tuple[int, int]] = []
    for shift in (-_WEEK, 0, _WEEK):  # the weekly closure, wherever it falls against this day
        lo, hi = closes + shift, opens + shift + (_WEEK if opens <= closes else 0)
        closed.append((lo - base, hi - base))
    closed += list(breaks)
    if day in holidays:  # minutes before the rollover belong to this trading day
        closed.append((0, rollover))
    if day + timedelta(days=1) in holidays:  # ... and those after it to tomorrow's
        closed.append((rollover, _DAY))
    return _subtract((0, _DAY), closed)


def _subtract(span: tuple[int, int], closed: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    pieces = [span]
    for lo, hi in closed:
        pieces = [p for a, b in pieces for p in ((a, min(b, lo)), (max(a, hi), b)) if p[0] < p[1]]
    return tuple(sorted(pieces))


def _minutes(t: object) -> int:
    return t.hour * 60 + t.minute  # type: ignore[attr-defined]


def _utc(zone: ZoneInfo, day: date, minute: int) -> datetime:
    # Wall-clock arithmetic, then the zone: a DST change within the day is honoured.
    naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minute)
    return naive.replace(tzinfo=zone).astimezone(UTC)
