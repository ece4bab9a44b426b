"""Guard profiles: what each family measures, and against which limits (docs/guard-rules.md, "Guard profiles").

Pure functions. ``track`` keeps the balances the prop-firm families measure from (the initial
balance, the day's start balance, the end-of-day balance peak); ``measure`` turns a trusted reading
into the numbers the levels compare: the loss towards the maximum, the day's loss towards its limit,
and whether the profit target is reached. The ``default`` family is today's drawdown guard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from infra.settings import AccountLevels, GuardProfile, ProfileFamily
from streams.decisions import replace
from streams.drawdown.readings import daily_loss, drawdown_percent
from streams.drawdown.state import DrawdownState, Reading

#: The warning level of a prop profile that sets none, as a share of its maximum loss.
DEFAULT_WARNING_SHARE = 0.8


@dataclass
class Measures:
    """Built at every trusted reading and read by ``levels`` right away: a plain dataclass (a frozen one's
    ``__init__`` costs three times as much); the facts only alerts and locks show are built when asked."""

    loss_percent: float  # compared with ``critical`` and ``warning``
    critical: float
    warning: float
    daily_loss_gbp: float
    daily_percent: float  # compared with ``daily_limit``
    daily_limit: float
    target_reached: bool
    what: str  # how alerts name the loss
    _facts: Callable[[], dict[str, Any]] = field(repr=False, compare=False)

    @cached_property
    def facts(self) -> dict[str, Any]:
        """What decision records show of the profile and its reference values."""
        return self._facts()


def label(name: str, profile: GuardProfile) -> str:
    return f"{name}@{profile.version}"


def track(state: DrawdownState, reading: Reading) -> DrawdownState:
    """After a trusted reading (``state.day`` is its broker day): the day's first balance is the balance at
    broker midnight, which is also the previous day's end-of-day balance."""
    initial = state.initial_balance_gbp if state.initial_balance_gbp is not None else reading.balance_gbp
    if state.balance_day == state.day:
        return state if initial == state.initial_balance_gbp else replace(state, initial_balance_gbp=initial)
    eod_peak = max(state.eod_balance_peak_gbp if state.eod_balance_peak_gbp is not None else initial,
                   reading.balance_gbp)
    return replace(state, initial_balance_gbp=initial, balance_day=state.day,
                   day_start_balance_gbp=reading.balance_gbp, eod_balance_peak_gbp=eod_peak)


def measure(state: DrawdownState, reading: Reading, levels: AccountLevels, name: str,
            profile: GuardProfile) -> Measures:
    """The prop families measure in money of the initial balance ``I``: the reference, the floor and the
    profit target each move by the net money flows ``N`` since the guard's first reading (a withdrawal
    of profits leaves the floor where it was in trading terms), while percentages stay of ``I``."""
    initial = levels.initial_balance_gbp if levels.initial_balance_gbp is not None else state.initial_balance_gbp
    flows = state.flows_net_gbp
    target = profile.profit_target_percent
    reached = target is not None and initial is not None and initial > 0 and \
        reading.equity_gbp >= initial * (1 + target / 100) + flows
    if profile.family is ProfileFamily.DEFAULT or initial is None or initial <= 0:
        loss_gbp, loss_percent = daily_loss(state, reading)
        return Measures(drawdown_percent(state, reading), levels.critical_drawdown_percent,
                        levels.warning_drawdown_percent, loss_gbp, loss_percent, levels.daily_loss_limit_percent,
                        reached, "Drawdown", lambda: _facts(name, profile, initial, flows))
    assert profile.max_loss_percent is not None and profile.daily_loss_percent is not None  # the model checks
    reference = max_loss_reference(state, profile, initial, flows)
    loss = max(0.0, reference - reading.equity_gbp)
    baseline = daily_baseline(state, reading)
    day_loss = max(0.0, baseline - reading.equity_gbp)
    warning = profile.warning_loss_percent or profile.max_loss_percent * DEFAULT_WARNING_SHARE

    def facts() -> dict[str, Any]:
        assert initial is not None and profile.max_loss_percent is not None
        return _facts(name, profile, initial, flows) | {
            "initial_balance_gbp": round(initial, 4), "max_loss_reference_gbp": round(reference, 4),
            "max_loss_floor_gbp": round(reference - initial * profile.max_loss_percent / 100, 4),
            "max_loss_percent": round(loss / initial * 100, 4), "daily_baseline_gbp": round(baseline, 4)}
    return Measures(loss / initial * 100, profile.max_loss_percent, warning, day_loss, day_loss / initial * 100,
                    profile.daily_loss_percent, reached, "Loss", facts)


def _facts(name: str, profile: GuardProfile, initial: float | None, flows: float) -> dict[str, Any]:
    """The profile, its profit target and (prop families) the net money flows, as decision records show them."""
    facts: dict[str, Any] = {"profile": {"name": name, "version": profile.version, "family": profile.family.value}}
    target = profile.profit_target_percent
    if target is not None and initial is not None:
        facts["profit_target_gbp"] = round(initial * (1 + target / 100) + flows, 4)
    if flows and profile.family is not ProfileFamily.DEFAULT:
        facts["money_flows_net_gbp"] = flows
    return facts


def max_loss_reference(state: DrawdownState, profile: GuardProfile, initial: float, flows: float = 0.0) -> float:
    """The level the maximum loss is measured down from (the floor is this minus max_loss% of initial).
    ``flows``: the net money flows since the first reading, which move the initial balance's level (the
    peak and the end-of-day balance peak have moved with them already)."""
    base = initial + flows
    if profile.family is ProfileFamily.TRAILING_EQUITY:
        reference = max(base, state.peak_equity_gbp or base)
    elif profile.family is ProfileFamily.TRAILING_EOD:
        reference = max(base, state.eod_balance_peak_gbp or base)
    else:
        return base
    if profile.trail_stops_at_initial and profile.max_loss_percent is not None:
        reference = min(reference, base + initial * profile.max_loss_percent / 100)  # the floor stops at initial
    return reference


def daily_baseline(state: DrawdownState, reading: Reading) -> float:
    """The higher of the day's start balance and its start equity (each, before it is known, the reading's)."""
    balance = state.day_start_balance_gbp if state.day_start_balance_gbp is not None else reading.balance_gbp
    equity = state.day_start_equity_gbp if state.day_start_equity_gbp is not None else balance
    return max(balance, equity)
