"""Readings: which ones are good, and what they mean (drawdown from the peak, the day's loss)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from infra.settings import GuardSettings
from schemas.reports import AccountReport
from streams.decisions import percent_off, replace
from streams.drawdown.state import DAILY, DrawdownState, Reading


def judge(state: DrawdownState, reading: Reading, config: GuardSettings, now: datetime) -> str:
    """``good``, ``stale``, ``absurd`` or ``suspect`` (a jump kept until the next reading confirms it)."""
    if not (math.isfinite(reading.equity_gbp) and math.isfinite(reading.balance_gbp)):
        return "absurd"
    if reading.equity_gbp <= 0 < reading.balance_gbp:
        return "absurd"
    last = state.last
    if last is not None and reading.at <= last.at:
        return "stale"
    if config.max_reading_age_seconds is not None and \
            (now - reading.at).total_seconds() > config.max_reading_age_seconds:
        return "stale"
    if last is None or not jumped(last, reading, config):
        return "good"
    suspect = state.suspect
    if suspect is not None and suspect.at < reading.at and not jumped(suspect, reading, config):
        return "good"  # two readings in a row agree on the new level: it is real
    return "suspect"


def jumped(before: Reading, after: Reading, config: GuardSettings) -> bool:
    unexplained = after.tickets == before.tickets and abs(after.balance_gbp - before.balance_gbp) < 0.01
    return unexplained and percent_off(after.equity_gbp, before.equity_gbp) > config.max_equity_jump_percent


def accept(state: DrawdownState, reading: Reading, report: AccountReport, config: GuardSettings) -> DrawdownState:
    peak = reading.equity_gbp if state.peak_equity_gbp is None else max(state.peak_equity_gbp, reading.equity_gbp)
    day = day_of(report, reading.at, config)
    day_start = state.day_start_equity_gbp if day == state.day else reading.equity_gbp
    streaks = state.streaks if day == state.day else {k: v for k, v in state.streaks.items() if k != DAILY}
    account = {"margin": report.margin * report.gbp_rate, "equity": reading.equity_gbp}
    return replace(state, peak_equity_gbp=peak, day=day, day_start_equity_gbp=day_start, streaks=streaks,
                   last=reading, suspect=None, sync_error=None, last_account=account)


def day_of(report: AccountReport, at: datetime, config: GuardSettings) -> str:
    """The trading day a reading belongs to: broker-server clock by default, shifted by the reset time."""
    clock = report.server_time or at
    if config.daily_reset_timezone is not None:
        clock = clock.astimezone(ZoneInfo(config.daily_reset_timezone))
    reset = config.daily_reset_time
    shifted = clock - timedelta(hours=reset.hour, minutes=reset.minute, seconds=reset.second)
    return shifted.date().isoformat()


def drawdown_percent(state: DrawdownState, reading: Reading) -> float:
    peak = state.peak_equity_gbp or 0.0
    return max(0.0, (peak - reading.equity_gbp) / peak * 100) if peak > 0 else 0.0


def daily_loss(state: DrawdownState, reading: Reading) -> tuple[float, float]:
    start = state.day_start_equity_gbp or 0.0
    loss = max(0.0, start - reading.equity_gbp)
    return loss, (loss / start * 100 if start > 0 else 0.0)

