"""Market sessions and broker clocks: when each symbol trades, and what clock each broker keeps.

The MetaTrader5 package exposes no session hours, so they come from here: a week and daily breaks
per asset class, written in the calendar's time zone (New York by default, where the FX week opens
on Sunday at 17:00 and closes on Friday at 17:00), a list of holidays (trading days, which roll over
at ``rollover``: 17:00 New York, i.e. midnight of a UTC+2/UTC+3 broker), and the broker suffixes that
map ``EURUSD.r``, ``XAUUSD#`` or ``US30.cash`` onto their base symbol. ``infra/sessions.py`` turns
it into answers (open now? next open?). Read as JSON from ``RECONGUARD_GUARD_MARKETS``.
"""

from __future__ import annotations

import re
from datetime import date, time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class SessionHours(BaseModel):
    """One asset class's trading week, in the calendar's time zone."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    always_open: bool = Field(default=False, description="Trades 24/7 (crypto): no week, break or holiday")
    week_opens: tuple[Weekday, time] = ("sun", time(17, 0))
    week_closes: tuple[Weekday, time] = ("fri", time(17, 0))
    daily_breaks: tuple[tuple[time, time], ...] = Field(
        default=(), description="(start, end) closed every trading day, local time")


FX = SessionHours()
METALS = SessionHours(week_opens=("sun", time(18, 0)), daily_breaks=((time(17, 0), time(18, 0)),))
INDICES = SessionHours(week_opens=("sun", time(18, 0)), daily_breaks=((time(17, 0), time(18, 0)),))
CRYPTO = SessionHours(always_open=True)

#: Broker clock rules: "auto" (learned from quotes), "new-york-close" (UTC+2, UTC+3 while New York
#: keeps summer time: midnight at 17:00 New York), "UTC+HH:MM" / "UTC-HH:MM" (fixed), or an IANA zone.
_FIXED = re.compile(r"^UTC([+-])(\d{2}):(\d{2})$")
NEW_YORK_CLOSE = "new-york-close"


def check_clock_rule(value: str) -> str:
    if value in ("auto", NEW_YORK_CLOSE) or _FIXED.match(value):
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown broker clock {value!r}: auto, {NEW_YORK_CLOSE}, UTC+HH:MM or an IANA zone") \
            from None
    return value


def fixed_offset_minutes(rule: str) -> int | None:
    """The minutes of a ``UTC+HH:MM`` rule; None for any other rule."""
    found = _FIXED.match(rule)
    if found is None:
        return None
    sign = 1 if found.group(1) == "+" else -1
    return sign * (int(found.group(2)) * 60 + int(found.group(3)))


class MarketSettings(BaseModel):
    """Sessions per symbol (by asset class), holidays, symbol suffixes, and broker clocks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str = Field(default="America/New_York", description="Zone the session hours are written in")
    rollover: time = Field(default=time(17, 0), description="Local time a trading day starts (holidays)")
    classes: dict[str, SessionHours] = Field(
        default_factory=lambda: {"fx": FX, "metals": METALS, "indices": INDICES, "crypto": CRYPTO})
    symbol_classes: dict[str, str] = Field(
        default_factory=lambda: {
            "EURUSD": "fx", "GBPUSD": "fx", "USDJPY": "fx", "EURGBP": "fx", "USDCHF": "fx", "AUDUSD": "fx",
            "XAUUSD": "metals", "XAGUSD": "metals", "US30": "indices", "US500": "indices",
            "NAS100": "indices", "GER40": "indices", "UK100": "indices", "BTCUSD": "crypto",
            "ETHUSD": "crypto"},
        description="Base symbol -> asset class; others take default_class")
    default_class: str = "fx"
    holidays: tuple[date, ...] = Field(
        default=(date(2025, 12, 25), date(2026, 1, 1), date(2026, 12, 25), date(2027, 1, 1)),
        description="Trading days every non-24/7 market is shut")
    suffixes: tuple[str, ...] = Field(
        default=(".cash", ".raw", ".ecn", ".pro", ".r", ".m", ".i", "#", "+", "_i"),
        description="Broker symbol suffixes stripped to find the base symbol (longest first)")
    aliases: dict[str, str] = Field(default_factory=dict, description="Broker symbol -> base symbol, explicitly")
    server_clock: str = Field(default="auto", description="Broker clock of every account unless overridden")
    server_clock_assumed: str = Field(default=NEW_YORK_CLOSE,
                                      description="Clock assumed by 'auto' until quotes have shown the offset")
    server_clocks: dict[str, str] = Field(default_factory=dict,
                                          description="Per account (user id or login): its broker clock rule")

    _memo: dict[object, object] = PrivateAttr(default_factory=dict)  # derived values (infra/sessions.py)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        ZoneInfo(value)  # ZoneInfoNotFoundError is a ValueError-like KeyError: refused at start
        return value

    @field_validator("server_clock", "server_clock_assumed")
    @classmethod
    def _clock(cls, value: str) -> str:
        return check_clock_rule(value)

    @field_validator("server_clocks")
    @classmethod
    def _clocks(cls, value: dict[str, str]) -> dict[str, str]:
        for rule in value.values():
            check_clock_rule(rule)
        return value

    @model_validator(mode="after")
    def _classes_known(self) -> MarketSettings:
        unknown = {c for c in (*self.symbol_classes.values(), self.default_class) if c not in self.classes}
        if unknown:
            raise ValueError(f"asset classes without session hours: {sorted(unknown)}")
        return self

    def base_symbol(self, name: str) -> str:
        """``EURUSD.r`` -> ``EURUSD``: the name sessions, spread limits and gap thresholds are kept under."""
        memo = self.__pydantic_private__["_memo"]  # type: ignore[index] - not via pydantic's slow __getattr__
        key = "base:" + name
        found = memo.get(key)
        if found is None:
            found = memo[key] = _strip(name, self)
        return found  # type: ignore[return-value]

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> MarketSettings:
        """A copy with its own derived values (pydantic would share the memo, and with it stale answers)."""
        copied = super().model_copy(update=update, deep=deep)
        copied.__pydantic_private__["_memo"] = {}  # type: ignore[index]
        return copied

    def always_open(self) -> MarketSettings:
        """This calendar with every class trading 24/7 and no holidays: for a simulated market that never
        closes (the demo's), so the guard's sessions agree with it. A new object: derived values are not shared."""
        return MarketSettings.model_validate(self.model_dump() | {
            "classes": {name: SessionHours(always_open=True) for name in self.classes}, "holidays": ()})

    def hours(self, symbol: str) -> SessionHours:
        memo = self.__pydantic_private__["_memo"]  # type: ignore[index] - asked on every quote: looked up once
        found = memo.get(("hours", symbol))
        if found is None:
            found = memo[("hours", symbol)] = \
                self.classes[self.symbol_classes.get(self.base_symbol(symbol), self.default_class)]
        return found  # type: ignore[return-value]

    def clock_rule(self, *keys: str) -> str:
        """The broker clock of an account, looked up by each key (user id, login) in turn."""
        for key in keys:
            if key in self.server_clocks:
                return self.server_clocks[key]
        return self.server_clock


def _strip(name: str, markets: MarketSettings) -> str:
    if name in markets.aliases:
        return markets.aliases[name]
    if name in markets.symbol_classes:
        return name
    for suffix in sorted(markets.suffixes, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name
