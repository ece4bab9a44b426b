"""The guards' and reconciliation's section: tolerances per symbol, guard defaults, data-quality limits.

Read from ``RECONGUARD_GUARD_<FIELD>``; nested values as JSON, e.g.
``RECONGUARD_GUARD_SYMBOLS='{"XAUUSD": {"max_spread_points": 80}}'``. `docs/guard-rules.md`
explains every field. Per-account guard levels live in the ``users`` table (``AccountLevels``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator
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

    _symbol_rules: dict[str, tuple[object, SymbolRules, SymbolRules]] = PrivateAttr(default_factory=dict)

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
