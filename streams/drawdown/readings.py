"""Readings: which ones are trusted, what they mean (drawdown from the peak, the day's loss), and
the money flows that move the peak and the day's start without being a gain or a loss."""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from infra.sessions import trading_day
from infra.settings import GuardSettings
from schemas.reports import AccountReport, MoneyFlow
from streams.decisions import percent_off, replace
from streams.drawdown.state import DAILY, FLOWS_KEPT, AppliedFlow, DrawdownState, Reading

#: Verdicts of ``judge``; every one but TRUSTED is a reason the reading was not trusted.
TRUSTED, ABSURD, STALE, INCONSISTENT, SUSPECT, RATE = "trusted", "absurd", "stale", "inconsistent", "suspect", "rate"
#: A flow the poller did not see appear (see ``apply_flows``) up to this much older than the guard's first
#: reading is still applied: the broker's clock and ours may disagree by this much. Less than the minute
#: for which the poller repeats a flow, so a flow older than the first report is never applied.
FLOW_TIME_SLACK = timedelta(seconds=30)


def judge(state: DrawdownState, reading: Reading, report: AccountReport, config: GuardSettings,
          now: datetime) -> str:
    """``trusted``, or why not: ``absurd``, ``stale``, ``inconsistent``, ``rate`` (the rate and its
    inverse pair's disagree) or ``suspect`` (a jump of equity or of the GBP rate, trusted once the
    next reading agrees with it)."""
    if not (math.isfinite(reading.equity_gbp) and math.isfinite(reading.balance_gbp)):
        return ABSURD
    if reading.equity_gbp <= 0 < reading.balance_gbp:
        return ABSURD
    last = state.last
    if last is not None and reading.at <= last.at:
        return STALE
    if config.max_reading_age_seconds is not None and \
            (now - reading.at).total_seconds() > config.max_reading_age_seconds:
        return STALE
    if not consistent(report, config):
        return INCONSISTENT
    inverse = report.gbp_rate_inverse
    if inverse is not None and percent_off(report.gbp_rate, inverse) > config.max_rate_move_percent:
        return RATE  # the pair and its inverse disagree: one of the quotes is bad
    if last is None or not jumped(last, reading, config):
        return TRUSTED
    suspect = state.suspect
    if suspect is not None and suspect.at < reading.at and not jumped(suspect, reading, config):
        return TRUSTED  # two readings in a row agree on the new level: it is real
    return SUSPECT


def consistent(report: AccountReport, config: GuardSettings) -> bool:
    """Equity agrees with balance + credit + the positions' profit and swap read in the same poll."""
    if report.positions_profit is None:
        return True  # a v1 report: nothing to check against
    expected = report.balance + report.credit + report.positions_profit
    tolerance = max(0.01, abs(report.equity) * config.consistency_tolerance_percent / 100)
    return abs(report.equity - expected) <= tolerance


def jumped(before: Reading, after: Reading, config: GuardSettings) -> bool:
    """An unexplained equity jump (same positions, same balance), or a GBP rate out of its band."""
    if percent_off(after.gbp_rate, before.gbp_rate) > config.max_rate_move_percent:
        return True
    unexplained = after.tickets == before.tickets and abs(after.balance_gbp - before.balance_gbp) < 0.01
    return unexplained and percent_off(after.equity_gbp, before.equity_gbp) > config.max_equity_jump_percent


def accept(state: DrawdownState, reading: Reading, report: AccountReport, config: GuardSettings) -> DrawdownState:
    """A trusted reading: a new peak and a new day's baseline each need ``confirmations`` of them."""
    n = config.confirmations
    recent = (*state.recent, reading.equity_gbp)[-n:]
    peak = state.peak_equity_gbp
    if len(recent) == n:  # the lowest of n trusted readings in a row is a level the account held
        peak = min(recent) if peak is None else max(peak, min(recent))
    day = day_of(report, reading.at, config)
    new_day = day != state.day
    day_recent = (reading.equity_gbp,) if new_day else (*state.day_recent, reading.equity_gbp)[:n]
    day_start = None if new_day else state.day_start_equity_gbp
    if day_start is None and len(day_recent) == n:
        day_start = min(day_recent)
    streaks = state.streaks if not new_day else {k: v for k, v in state.streaks.items() if k != DAILY}
    account = {"margin": report.margin * report.gbp_rate, "equity": reading.equity_gbp}
    return replace(state, peak_equity_gbp=peak, day=day, day_start_equity_gbp=day_start, streaks=streaks,
                   since=state.since or reading.at, last=reading, last_seq=report.poll_seq, suspect=None,
                   sync_error=None,
                   last_account=account, recent=recent, day_recent=day_recent)


def apply_flows(state: DrawdownState, report: AccountReport, config: GuardSettings) -> DrawdownState:
    """Shift the peak and the day's start by the money flows new since the last reading.

    With E0 the equity before the flows and F their net amount (GBP), the peak P and the day's start
    D become P * (E0 + F) / E0 and D * (E0 + F) / E0: the drawdown and the day's loss in percent are
    what they were, so a withdrawal never triggers the guard and a deposit is no gain. When E0 <= 0
    or E0 + F <= 0 there is nothing to scale: both restart from max(0, E0 + F).

    E0 is estimated from two or more readings, so that one reading priced off a bad quote cannot
    inflate the peak: the last trusted equity, and this report's equity less F when it is consistent
    (when it is not, its balance and credit less F: a repeated flow can arrive on a spike); of these,
    the largest for a deposit and the smallest for a withdrawal (the lower peak either way). When this
    report does not directly follow the last trusted one (a report in between was lost or untrusted),
    trading since the flow may have moved this report's equity, so the last ``confirmations`` trusted
    equities join the candidates: a quote off by less than the jump band passes as trusted, and it
    alone must not be the level a deposit is scaled from.

    Which flows are new: each is applied once, by ticket. One the poller marks ``after_previous_poll``
    is new, whatever its time (the terminal's clock need not agree with ours). The poller repeats a flow
    for about a minute, and reports the last day's flows on its first read of an account, so a flow
    not seen before is either new to the guard (its report's effect was lost, or money moved while the
    poller was down) or older than what the guard keeps: it counts when it is later than the newest
    flow dropped from the state and than the guard's first reading (``FLOW_TIME_SLACK`` for the two
    clocks' disagreement). Flows before the first reading are already in it.
    """
    seen = {f.ticket for f in state.flows}
    last = state.last
    new = [f for f in report.money_flows if f.ticket not in seen]
    if not new:
        return state
    if last is None:  # flows before the first reading are already in it
        return _with_kept(state, [_applied(f, 1.0) for f in new])
    since = (state.since or last.at) - FLOW_TIME_SLACK
    floor = state.flows_floor
    new = [f for f in new if f.after_previous_poll or (f.time > since and (floor is None or f.time > floor))]
    if not new:
        return state
    net = sum(f.amount_gbp for f in new)
    before, best = _equity_before(state, report, net, config)
    after = before + net
    ratio = after / before if before > 0 and after > 0 else None

    def moved(value: float | None) -> float | None:
        if value is None:
            return None
        return value * ratio if ratio is not None else max(0.0, after)

    balance_net = sum(f.amount_gbp for f in new if f.kind.value in ("balance", "charge", "correction"))
    shifted = replace(last, equity_gbp=best + net, balance_gbp=last.balance_gbp + balance_net)

    def added(value: float | None) -> float | None:  # a balance the prop profiles measure from
        return None if value is None else value + balance_net

    moved_state = replace(state, peak_equity_gbp=moved(state.peak_equity_gbp),
                          day_start_equity_gbp=moved(state.day_start_equity_gbp), last=shifted,
                          recent=tuple(moved(v) or 0.0 for v in state.recent),
                          day_recent=tuple(moved(v) or 0.0 for v in state.day_recent),
                          day_start_balance_gbp=added(state.day_start_balance_gbp),
                          eod_balance_peak_gbp=added(state.eod_balance_peak_gbp),
                          flows_net_gbp=round(state.flows_net_gbp + net, 4))
    return _with_kept(moved_state, [_applied(f, ratio if ratio is not None else 0.0) for f in new])


def _equity_before(state: DrawdownState, report: AccountReport, net: float, config: GuardSettings
                   ) -> tuple[float, float]:
    """The equity before the flows: (the bound the peak is scaled from, the best estimate).

    The bound is the most lenient of the candidates (the lower peak); the best estimate is their
    median, what the last reading becomes once the flows are added: one bad reading among three is
    outvoted, so it does not make the next good one look like a jump."""
    assert state.last is not None
    recent = list(state.recent) or [state.last.equity_gbp]  # volatile: empty after a restart
    follows = state.last_seq is not None and report.poll_seq == state.last_seq + 1
    now = [] if (estimate := _now_less_flows(report, net, config)) is None else [estimate]
    bounded = [state.last.equity_gbp, *now] if follows else [*recent, state.last.equity_gbp, *now]
    bound = max(bounded) if net > 0 else min(bounded)
    voters = sorted([*recent, *now])
    middle = len(voters) // 2
    best = voters[middle] if len(voters) % 2 else \
        (max if net > 0 else min)(voters[middle - 1], voters[middle])
    return bound, best


def _now_less_flows(report: AccountReport, net: float, config: GuardSettings) -> float | None:
    """This report's equity less the flows (its balance and credit less them when it is inconsistent:
    a repeated flow can arrive on a spike), or None when that is not positive."""
    if consistent(report, config):
        estimate = report.equity * report.gbp_rate - net
    else:
        estimate = (report.balance + report.credit) * report.gbp_rate - net
    return estimate if estimate > 0 else None


def _applied(flow: MoneyFlow, ratio: float) -> AppliedFlow:
    return AppliedFlow(flow.ticket, flow.kind.value, round(flow.amount_gbp, 4), flow.time, round(ratio, 8))


def _with_kept(state: DrawdownState, new: list[AppliedFlow]) -> DrawdownState:
    """``new`` added to the flows kept; the time of the newest one dropped becomes the floor."""
    flows = (*state.flows, *new)
    dropped, kept = flows[:-FLOWS_KEPT], flows[-FLOWS_KEPT:]
    times = [f.at for f in dropped] + ([state.flows_floor] if state.flows_floor is not None else [])
    return replace(state, flows=kept, flows_floor=max(times, default=None))


def day_of(report: AccountReport, at: datetime, config: GuardSettings) -> str:
    """The trading day of a reading: the broker server's day by default (its clock at the poll), or the
    configured zone applied once to the true UTC time; then shifted by the reset time. A report that
    carries no server clock falls back on the market calendar's trading day (17:00 New York)."""
    shift = _reset_shift(config.daily_reset_time)
    if config.daily_reset_timezone is not None:
        return (at.astimezone(ZoneInfo(config.daily_reset_timezone)) - shift).date().isoformat()
    if report.server_time is not None:
        return (report.server_time - shift).date().isoformat()
    return trading_day(config.markets, at - shift).isoformat()


@lru_cache(maxsize=64)
def _reset_shift(reset: time) -> timedelta:
    return timedelta(hours=reset.hour, minutes=reset.minute, seconds=reset.second)


def drawdown_percent(state: DrawdownState, reading: Reading) -> float:
    peak = state.peak_equity_gbp or 0.0
    return max(0.0, (peak - reading.equity_gbp) / peak * 100) if peak > 0 else 0.0


def daily_loss(state: DrawdownState, reading: Reading) -> tuple[float, float]:
    start = state.day_start_equity_gbp or 0.0
    loss = max(0.0, start - reading.equity_gbp)
    return loss, (loss / start * 100 if start > 0 else 0.0)
