"""Guard profiles: each family's formula (docs/guard-rules.md, "Guard profiles"), and the records naming it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from infra.settings import AccountLevels, GuardProfile, GuardSettings, ProfileFamily
from schemas import Envelope
from schemas.common import CloseReason
from streams.drawdown.liquidation import fire_due
from streams.drawdown.profiles import daily_baseline, max_loss_reference, measure
from streams.drawdown.state import DrawdownState, Reading
from tests.unit.streams.builders import T0, account, position, positions
from tests.unit.streams.test_drawdown_rules import run as run_rules
from tests.unit.streams.test_drawdown_truth import flow
from tests.unit.streams.test_drawdown_truth import reading as report

CONFIG = GuardSettings(max_reading_age_seconds=None)
PROFILES = CONFIG.profiles
STATIC, TRAILING, EOD = PROFILES["prop-static"], PROFILES["prop-trailing"], PROFILES["prop-trailing-eod"]
HELD = positions(position(1001, profit_gbp=-400), t=0.5)


def levels(profile: str, initial: float | None = 10_000) -> AccountLevels:
    return AccountLevels(profile=profile, initial_balance_gbp=initial, daily_loss_limit_percent=50)


def run(*events: Envelope[Any], lv: AccountLevels, state: DrawdownState | None = None
        ) -> tuple[DrawdownState, list[Envelope[Any]]]:
    return run_rules(*events, state=state, levels=lv, config=CONFIG)


def reading(equity: float, balance: float = 10_000) -> Reading:
    return Reading(T0, equity, balance, ())


def kinds(outputs: list[Envelope[Any]]) -> list[str]:
    return [o.payload.alert_type.value if o.event_type == "GuardAlertRaised" else o.event_type for o in outputs
            if o.event_type != "AccountAssessed"]


@pytest.mark.parametrize(("description", "profile", "state", "equity", "loss_percent"), [
    ("static: from the initial balance, whatever the peak", STATIC, DrawdownState(peak_equity_gbp=12_000), 9_500, 5.0),
    ("trailing equity: from the peak", TRAILING, DrawdownState(peak_equity_gbp=10_400), 9_900, 5.0),
    ("trailing equity: the floor stops at the initial balance", TRAILING, DrawdownState(peak_equity_gbp=12_000),
     10_100, 5.0),  # reference min(12 000, 10 600) = 10 600
    ("trailing end-of-day balance: from the best day's closing balance", EOD,
     DrawdownState(peak_equity_gbp=12_000, eod_balance_peak_gbp=10_300), 10_000, 3.0),
    ("a profit is no loss", STATIC, DrawdownState(), 10_500, 0.0),
])
def test_each_family_measures_its_maximum_loss_as_a_share_of_the_initial_balance(
        description: str, profile: GuardProfile, state: DrawdownState, equity: float, loss_percent: float):
    m = measure(state, reading(equity), levels("x"), "x", profile)
    assert m.loss_percent == pytest.approx(loss_percent), description
    assert m.critical == profile.max_loss_percent


def test_the_daily_loss_runs_from_the_higher_of_the_day_start_balance_and_equity():
    state = DrawdownState(day_start_balance_gbp=10_000, day_start_equity_gbp=10_300)
    m = measure(state, reading(10_000), levels("x"), "x", EOD)
    assert daily_baseline(state, reading(10_000)) == 10_300
    assert m.daily_percent == pytest.approx(3.0) and m.daily_limit == EOD.daily_loss_percent


def test_the_default_profile_is_todays_drawdown_from_the_peak_with_the_accounts_levels():
    lv = AccountLevels(critical_drawdown_percent=12)
    m = measure(DrawdownState(peak_equity_gbp=10_000), reading(9_000), lv, "default", PROFILES["default"])
    assert (m.loss_percent, m.critical) == (pytest.approx(10.0), 12)
    assert m.facts == {"profile": {"name": "default", "version": 1, "family": "default"}}


def test_a_static_profile_ignores_the_peak_that_the_default_one_liquidates_from():
    rise_then_fall = [account(10_000, t=0.75), account(10_000, t=1), account(10_800, t=2), account(10_800, t=3),
                      account(9_700, t=4), account(9_700, t=5)]
    assert kinds(run(HELD, *rise_then_fall, lv=levels("default"))[1]) == ["drawdown_critical"]
    assert kinds(run(HELD, *rise_then_fall, lv=levels("prop-static"))[1]) == []  # 3 % below the initial balance


def test_a_breach_names_the_profile_and_its_version_in_the_alert_the_close_and_the_snapshot():
    fall = [account(10_000, t=0.75), account(10_000, t=1), account(8_900, t=2), account(8_900, t=3)]
    state, outputs = run(HELD, *fall, lv=levels("prop-static"))
    alert = next(o.payload for o in outputs if o.event_type == "GuardAlertRaised")
    assert alert.details["profile"] == {"name": "prop-static", "version": 1, "family": "static"}
    assert alert.details["max_loss_floor_gbp"] == 9_000 and "Loss 11.00%" in alert.message
    closes = fire_due(state, state.pending.deadline).outputs
    command = next(o.payload for o in closes if o.event_type == "ClosePosition")
    assert command.reason is CloseReason.DRAWDOWN_GUARD and command.details["profile"]["name"] == "prop-static"
    assert {o.payload.profile for o in outputs if o.event_type == "AccountAssessed"} == {"prop-static@1"}


def test_reaching_the_profit_target_locks_the_account_and_closes_its_positions():
    state, outputs = run(HELD, account(10_000, t=0.75), account(10_000, t=1), account(11_000, t=2),
                         account(11_000, t=3), lv=levels("prop-static"))
    locked = [o.payload for o in outputs if o.event_type == "AccountLocked"]
    assert [lock.kind.value for lock in locked] == ["profit_target"]
    assert locked[0].details["inputs"]["profile"]["name"] == "prop-static"
    state, outputs = run(positions(position(1001, profit_gbp=1_000), t=4), state=state, lv=levels("prop-static"))
    assert [(o.payload.reason, o.payload.tickets) for o in outputs] == [(CloseReason.ACCOUNT_LOCKED, (1001,))]


def test_the_end_of_day_peak_is_the_balance_at_each_broker_midnight():
    def day(n: int, t: float, balance: float) -> Envelope[Any]:
        return account(balance, t=t, balance=balance, server_time=datetime(2026, 11, 1 + n, 1, 0, tzinfo=UTC))

    state, _ = run(day(1, 1, 10_000), day(1, 2, 10_400), day(2, 3, 10_300), day(2, 4, 10_200), day(3, 5, 10_100),
                   lv=levels("prop-trailing-eod"))
    assert state.eod_balance_peak_gbp == 10_300 and state.day_start_balance_gbp == 10_100


def test_an_unknown_profile_name_takes_the_default_and_says_so():
    assert CONFIG.profile("renamed") == ("default", PROFILES["default"])


@pytest.mark.parametrize(("description", "fields"), [
    ("a prop profile needs its maximum loss", {"version": 1, "family": "static", "daily_loss_percent": 5}),
    ("the warning is below the maximum", {"version": 1, "family": "static", "max_loss_percent": 5,
                                          "daily_loss_percent": 5, "warning_loss_percent": 6}),
    ("versions start at 1", {"version": 0, "family": "default"}),
])
def test_a_profile_that_cannot_work_is_refused(description: str, fields: dict[str, Any]):
    with pytest.raises(ValidationError):
        GuardProfile.model_validate(fields)


def test_profiles_must_define_default():
    with pytest.raises(ValidationError, match="default"):
        GuardSettings(profiles={"prop-static": STATIC})


@given(peaks=st.lists(st.floats(min_value=1_000, max_value=50_000), min_size=1, max_size=20),
       family=st.sampled_from([ProfileFamily.TRAILING_EQUITY, ProfileFamily.TRAILING_EOD]),
       stops=st.booleans())
def test_a_trailing_floor_never_falls_and_stops_at_the_initial_balance_when_told(
        peaks: list[float], family: ProfileFamily, stops: bool):
    profile = GuardProfile(version=1, family=family, max_loss_percent=6, daily_loss_percent=3,
                           trail_stops_at_initial=stops)
    floors, high = [], 0.0
    for peak in peaks:
        high = max(high, peak)
        state = DrawdownState(peak_equity_gbp=high, eod_balance_peak_gbp=high)
        floors.append(max_loss_reference(state, profile, 10_000) - 600)
    assert floors == sorted(floors) and floors[0] >= 9_400
    if stops:
        assert max(floors) <= 10_000


@given(equity=st.floats(min_value=1, max_value=100_000), peak=st.floats(min_value=1, max_value=100_000),
       name=st.sampled_from(sorted(PROFILES)))
def test_no_profile_measures_a_negative_loss(equity: float, peak: float, name: str):
    state = DrawdownState(peak_equity_gbp=peak, eod_balance_peak_gbp=peak, day_start_balance_gbp=peak)
    m = measure(state, reading(equity), levels(name), name, PROFILES[name])
    assert m.loss_percent >= 0 and m.daily_percent >= 0


def test_the_worked_example_in_the_guard_rules_holds():
    state = DrawdownState(peak_equity_gbp=10_900, eod_balance_peak_gbp=10_500, day_start_balance_gbp=10_500,
                          day_start_equity_gbp=10_700)
    m = measure(state, reading(10_280, balance=10_500), levels("prop-trailing"), "prop-trailing", TRAILING)
    assert (m.facts["max_loss_reference_gbp"], m.facts["max_loss_floor_gbp"]) == (10_600, 10_000)
    assert m.daily_percent == pytest.approx(4.2) and m.daily_percent >= m.daily_limit
    calm = measure(state, reading(10_350, balance=10_500), levels("prop-trailing"), "prop-trailing", TRAILING)
    assert (calm.loss_percent, calm.daily_percent) == (pytest.approx(2.5), pytest.approx(3.5))
    assert measure(state, reading(10_280), levels("x"), "x", STATIC).loss_percent == 0
    eod = measure(state, reading(10_280), levels("x"), "x", EOD)
    assert eod.loss_percent == pytest.approx(2.2) and eod.daily_percent >= EOD.daily_loss_percent


def test_the_profiles_reach_a_child_process_through_its_environment(monkeypatch: pytest.MonkeyPatch):
    from infra.settings import Settings, environment

    custom = {"default": PROFILES["default"], "tight": GuardProfile(version=3, family=ProfileFamily.STATIC,
                                                                    max_loss_percent=4, daily_loss_percent=2)}
    env = environment(Settings(guard=GuardSettings(profiles=custom)))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().guard.profiles == custom


@pytest.mark.parametrize("name", ["prop-static", "prop-trailing", "prop-trailing-eod"])
def test_a_withdrawal_is_no_loss_and_a_deposit_no_gain_for_a_prop_profile(name: str):
    """15 % withdrawn with a position open, then 2 700 deposited: measured from the initial balance as it
    was, the withdrawal would be a 15 % loss (a liquidation) and the deposit would reach the 10 % profit
    target (a lock). The initial balance's level moves by the flows; percentages stay of it."""
    w, d = flow(-1_500, t=3), flow(2_700, t=6)
    state, outputs = run(HELD, report(10_000, t=1), report(10_000, t=2), report(8_500, t=3.5, flows=(w,)),
                         report(8_500, t=4), report(8_500, t=5), report(11_200, t=6.5, flows=(d,)),
                         report(11_200, t=7), report(11_200, t=8), lv=levels(name))
    assert kinds(outputs) == [], name
    assert state.flows_net_gbp == 1_200
    snapshot = [o.payload for o in outputs if o.event_type == "AccountAssessed"][-1]
    assert snapshot.profile == f"{name}@1"


def test_a_real_loss_after_a_withdrawal_is_still_a_prop_breach():
    """Static 10 %: 1 500 out leaves the floor 1 000 below 8 500; a trading loss of 1 100 crosses it."""
    _, outputs = run(HELD, report(10_000, t=1), report(10_000, t=2),
                     report(8_500, t=3.5, flows=(flow(-1_500, t=3),)), report(8_500, t=4),
                     report(7_400, t=5), report(7_400, t=6), lv=levels("prop-static"))
    alert = next(o.payload for o in outputs if o.event_type == "GuardAlertRaised")
    assert alert.details["max_loss_reference_gbp"] == 8_500 and alert.details["money_flows_net_gbp"] == -1_500
    assert alert.details["max_loss_percent"] == pytest.approx(11.0)
