"""The guards' and reconciliation's section: tolerances per symbol, guard defaults, data-quality limits.

Read from ``RECONGUARD_GUARD_<FIELD>``; nested values as JSON, e.g.
``RECONGUARD_GUARD_SYMBOLS='{"XAUUSD": {"max_spread_points": 80}}'``. `docs/guard-rules.md`
explains every field. Per-account guard levels live in the ``users`` table (``AccountLevels``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.settings.markets import MarketSettings


class SymbolRules(BaseModel):
    """Tolerances of one symbol; any field left out takes the default symbol's value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    volume_tolerance_lots: float = Field(default=0.001, ge=0, description="|observed - expected| allowed")
    slippage_percent: float = Field(default=0.05, ge=0, description="|open - entry| / entry, percent")
    sl_tp_drift_percent: float = Field(default=0.01, ge=0, description="|observed - expected| stop, percent")
    gap_tolerance_percent: float = Field(default=0.01, ge=0,
                                         description="A stop fill worse than this beyond the stop is a gap")
    quote_gap_percent: float = Field(default=1.0, gt=0, description="Mid move between consecutive quotes")
    max_spread_points: float | None = Field(default=None, gt=0, description="None: no spread check")
    stale_quote_seconds: float = Field(default=30.0, gt=0, description="Quote age while the market is open")
    gap_window_seconds: float = Field(default=120.0, gt=0,
                                      description="Quotes further apart are not consecutive: no market_gap")
    session_gap_percent: float | None = Field(default=None, gt=0,
                                              description="Mid move across a closed session; None: no check")


class AccountLevels(BaseModel):
    """One account's guard levels (a ``users`` row): only an admin changes them."""

    model_config = ConfigDict(frozen=True)

    warning_drawdown_percent: float = 5.0
    critical_drawdown_percent: float = 10.0
    daily_loss_limit_percent: float = 5.0
    close_grace_seconds: float = 10.0
    profile: str = "default"  # a name in GuardSettings.profiles (docs/guard-rules.md, "Guard profiles")
    initial_balance_gbp: float | None = None  # None: the balance of the account's first trusted reading


class ProfileFamily(StrEnum):
    """How a guard profile measures the loss it limits (formulas: docs/guard-rules.md, "Guard profiles")."""

    DEFAULT = "default"  # drawdown from the equity high-water mark; daily loss from the day's start equity
    STATIC = "static"  # maximum loss from the initial balance
    TRAILING_EQUITY = "trailing_equity"  # maximum loss trailing the equity high-water mark
    TRAILING_EOD = "trailing_eod"  # maximum loss trailing the end-of-day balance high-water mark


class GuardProfile(BaseModel):
    """A named, versioned rule set: bump ``version`` whenever a field changes (decisions record both)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1)
    family: ProfileFamily
    description: str = ""
    max_loss_percent: float | None = Field(default=None, gt=0, lt=100,
                                           description="Of the initial balance; the account's levels for default")
    warning_loss_percent: float | None = Field(default=None, gt=0, lt=100, description="Of the initial balance")
    daily_loss_percent: float | None = Field(default=None, gt=0, lt=100,
                                             description="Of the initial balance, from the day's baseline")
    trail_stops_at_initial: bool = Field(default=False,
                                         description="A trailing floor rises no higher than the initial balance")
    profit_target_percent: float | None = Field(default=None, gt=0,
                                                description="Equity this far above the initial balance locks")

    @model_validator(mode="after")
    def _complete(self) -> GuardProfile:
        if self.family is not ProfileFamily.DEFAULT:
            if self.max_loss_percent is None or self.daily_loss_percent is None:
                raise ValueError(f"a {self.family.value} profile needs max_loss_percent and daily_loss_percent")
            if self.warning_loss_percent is not None and self.warning_loss_percent >= self.max_loss_percent:
                raise ValueError("warning_loss_percent must be below max_loss_percent")
        return self


def _builtin_profiles() -> dict[str, GuardProfile]:
    return {
        "default": GuardProfile(version=1, family=ProfileFamily.DEFAULT,
                                description="Drawdown from the equity peak and daily loss: the account's levels"),
        "prop-static": GuardProfile(version=1, family=ProfileFamily.STATIC, max_loss_percent=10,
                                    warning_loss_percent=8, daily_loss_percent=5, profit_target_percent=10,
                                    description="10% maximum loss from the initial balance, 5% daily, 10% target"),
        "prop-trailing": GuardProfile(version=1, family=ProfileFamily.TRAILING_EQUITY, max_loss_percent=6,
                                      warning_loss_percent=5, daily_loss_percent=4, trail_stops_at_initial=True,
                                      profit_target_percent=8,
                                      description="6% trailing the equity peak, stopping at the initial balance"),
        "prop-trailing-eod": GuardProfile(version=1, family=ProfileFamily.TRAILING_EOD, max_loss_percent=5,
                                          warning_loss_percent=4, daily_loss_percent=3, trail_stops_at_initial=True,
                                          profit_target_percent=10,
                                          description="5% trailing the end-of-day balance peak, stopping at "
                                                      "the initial balance"),
    }


DEFAULT_LEVELS = AccountLevels()


class GuardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECONGUARD_GUARD_", extra="ignore", frozen=True)

    default_symbol: SymbolRules = SymbolRules()
    symbols: dict[str, dict[str, float | None]] = Field(
        default_factory=lambda: {
            "EURUSD": {"max_spread_points": 60}, "GBPUSD": {"max_spread_points": 75},
            "USDJPY": {"max_spread_points": 70}, "EURGBP": {"max_spread_points": 80},
            "XAUUSD": {"max_spread_points": 125, "quote_gap_percent": 1.5},
            "US30": {"max_spread_points": 1500, "quote_gap_percent": 2.0},
        },
        description="Per-symbol overrides of default_symbol's fields.")

    # reconciliation
    fill_window_seconds: float = Field(default=30.0, gt=0,
                                       description="An approved trade with no position after this is missing")
    unexpected_after_seconds: float = Field(default=15.0, ge=0,
                                            description="An unmatched position older than this is unexpected")
    match_window_seconds: float = Field(default=120.0, gt=0,
                                        description="symbol+time matching: |opened_at - approved_at| at most")
    closed_trade_retention_seconds: float = Field(default=86400.0, gt=0)
    platform_magic: int = Field(default=424_242, ge=0,
                                description="The magic number on the platform's orders; 0: none (comment only)")
    platform_close_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A platform close the terminal has not done after this is close_not_executed")

    # drawdown guard
    confirmations: int = Field(default=2, ge=1,
                               description="Consecutive trusted readings that confirm a peak, a day's start or a breach")
    max_equity_jump_percent: float = Field(default=50.0, gt=0,
                                           description="A bigger jump with no position or balance change is absurd")
    max_reading_age_seconds: float | None = Field(default=30.0, gt=0,
                                                  description="Older readings are stale; None: no age check")
    daily_reset_time: time = Field(default=time(0, 0), description="Start of the trading day")
    daily_reset_timezone: str | None = Field(default=None,
                                             description="IANA zone; None: the broker server's own clock")
    snapshot_interval_seconds: float = Field(default=5.0, ge=0,
                                             description="At most one AccountAssessed per account per interval")
    consistency_tolerance_percent: float = Field(
        default=0.5, ge=0, description="Equity may differ from balance + credit + positions' profit by this % of it")
    max_rate_move_percent: float = Field(default=5.0, gt=0,
                                         description="GBP rate move from the last trusted one that is suspect")

    # markets and broker clocks (sessions, holidays, symbol suffixes): infra/settings/markets.py
    markets: MarketSettings = Field(default_factory=MarketSettings,
                                    description="Sessions per asset class, holidays, suffixes, broker clocks")

    # both guards
    reclose_after_seconds: float = Field(default=30.0, gt=0,
                                         description="At most one close command per account+symbol per interval")

    # a guard close the executor could not do (see docs/guard-rules.md, "Failed liquidations")
    liquidation_fast_retries: int = Field(default=3, ge=0,
                                          description="Retries at retry_seconds, doubling, before escalating")
    liquidation_retry_seconds: float = Field(default=2.0, gt=0, description="The first fast retry's delay")
    liquidation_escalated_retry_seconds: float = Field(
        default=60.0, gt=0, description="After the escalation: retry at this cadence until the positions are flat")
    liquidation_answer_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A close the executor has not answered within this counts as refused")

    # guard profiles (docs/guard-rules.md, "Guard profiles"); a user's ``guard_profile`` names one
    profiles: dict[str, GuardProfile] = Field(default_factory=_builtin_profiles,
                                              description="Named, versioned guard rule sets; 'default' is required")

    _symbol_rules: dict[str, tuple[object, SymbolRules, SymbolRules]] = PrivateAttr(default_factory=dict)

    @field_validator("profiles")
    @classmethod
    def _has_default(cls, value: dict[str, GuardProfile]) -> dict[str, GuardProfile]:
        if "default" not in value:
            raise ValueError("profiles must define 'default'")
        return value

    def profile(self, name: str) -> tuple[str, GuardProfile]:
        """The profile called ``name``, or ``default`` when no profile has that name (renamed since)."""
        found = self.profiles.get(name)
        return (name, found) if found is not None else ("default", self.profiles["default"])

    @field_validator("daily_reset_timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("symbols")
    @classmethod
    def _known_fields(cls, value: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
        for overrides in value.values():
            SymbolRules.model_validate(overrides)  # an unknown or negative field is refused here, at start
        return value

    def symbol(self, name: str) -> SymbolRules:
        """The rules of a symbol, by its base name (``EURUSD.r`` takes ``EURUSD``'s)."""
        overrides = self.symbols.get(name)
        if overrides is None:
            name = self.markets.base_symbol(name)
            overrides = self.symbols.get(name)
        memo = self.__pydantic_private__["_symbol_rules"]  # type: ignore[index] - not via __getattr__
        cached = memo.get(name)  # asked per event: merged once per symbol
        if cached is not None and cached[0] is overrides and cached[1] is self.default_symbol:
            return cached[2]
        rules = _merged(self.default_symbol, tuple(sorted(overrides.items()))) if overrides else self.default_symbol
        memo[name] = (overrides, self.default_symbol, rules)
        return rules


@dataclass(frozen=True)
class _Key:
    base: SymbolRules
    overrides: tuple[tuple[str, float | None], ...]


_MERGED: dict[_Key, SymbolRules] = {}


def _merged(base: SymbolRules, overrides: tuple[tuple[str, float | None], ...]) -> SymbolRules:
    key = _Key(base, overrides)
    rules = _MERGED.get(key)
    if rules is None:
        rules = _MERGED[key] = SymbolRules.model_validate(base.model_dump() | dict(overrides))
    return rules
