"""What-if over history: the liquidations other settings would and would not have ordered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.settings import AccountLevels, GuardSettings
from schemas import Envelope
from simulation.whatif import WOULD, WOULD_NOT, ChangeError, Changes, what_if
from simulation.worker import Worker, replay
from tests.unit.streams.builders import USER, account, position, positions

GUARD = GuardSettings(max_reading_age_seconds=None)
LEVELS = {USER: AccountLevels(critical_drawdown_percent=10, warning_drawdown_percent=5, daily_loss_limit_percent=50)}
# A peak of 10 000, then 9 % and 12 % below it, each held for two readings.
HISTORY: list[Envelope[Any]] = [positions(position(1001, profit_gbp=-900), t=0.5)] + [
    account(e, t=t) for t, e in ((0.75, 10_000), (1, 10_000), (2, 9_100), (3, 9_100), (20, 8_800), (21, 8_800), (40, 8_800))]


def recorded(levels: dict[str, AccountLevels] = LEVELS) -> list[Envelope[Any]]:
    """What the worker really ordered on HISTORY (a stand-in for the recorded close-commands topic)."""
    worker = Worker(guard=GUARD, levels=lambda a: levels[a])
    return [out for _, out in replay(worker, HISTORY) if out.event_type == "ClosePosition"]


def changed(*assignments: str, **kw: Any):
    return what_if(HISTORY, recorded(), guard=GUARD, recorded_levels=LEVELS, changes=Changes.parse(assignments, **kw))


def test_the_same_settings_differ_in_nothing():
    outcome = changed()
    assert len(outcome.real) == 1 and outcome.simulated == outcome.real and outcome.differences == []


def test_a_higher_critical_level_lists_the_liquidation_that_would_not_have_happened():
    outcome = changed("guard.critical_drawdown_percent=15")
    assert [(d.change, d.liquidation.reason, d.liquidation.loss_percent) for d in outcome.differences] == [
        (WOULD_NOT, "drawdown_guard", 12.0)]


def test_a_lower_critical_level_liquidates_earlier_at_a_smaller_loss():
    outcome = changed("guard.critical_drawdown_percent=8")
    assert [(d.change, d.liquidation.loss_percent, d.liquidation.loss_gbp) for d in outcome.differences] == [
        (WOULD, 9.0, 900.0), (WOULD_NOT, 12.0, 1_200.0)]  # in time order
    assert outcome.as_json()["differences"][0]["change"] == "would_have_happened"


def test_a_profile_changes_the_rules_and_the_records_name_it():
    outcome = changed(profile="prop-static")  # its daily limit is 5 % of the initial 10 000: 9 % breaches it
    assert [x.profile for x in outcome.real] == ["default@1"]
    assert [(x.profile, x.reason, x.loss_percent) for x in outcome.simulated] == [
        ("prop-static@1", "daily_loss_guard", 9.0)]


def test_a_settings_file_and_guard_settings_apply(tmp_path: Path):
    file = tmp_path / "stricter.yaml"
    file.write_text("guard:\n  critical_drawdown_percent: 8\n  confirmations: 3\n")
    changes = Changes.parse(file=file)
    assert changes.guard == {"confirmations": 3} and changes.levels == {"critical_drawdown_percent": 8}


@pytest.mark.parametrize(("description", "assignments", "profile", "message"), [
    ("no guard. prefix", ["critical_drawdown_percent=8"], None, "expected guard.FIELD=VALUE"),
    ("an unknown field", ["guard.criticality=8"], None, "unknown setting"),
    ("an unknown profile", [], "lenient", "no guard profile 'lenient'"),
    ("a bad value", ["guard.confirmations=0"], None, "confirmations"),
])
def test_a_change_that_cannot_apply_is_refused_before_anything_runs(description, assignments, profile, message):
    with pytest.raises(ChangeError, match=message):
        what_if(HISTORY, [], guard=GUARD, recorded_levels=LEVELS,
                changes=Changes.parse(assignments, profile=profile))


def test_a_liquidation_ordered_after_the_last_report_is_still_compared():
    cut = HISTORY[:-1]  # the record ends with the close command, 10 s after the last report
    outcome = what_if(cut, recorded(), guard=GUARD, recorded_levels=LEVELS, changes=Changes())
    assert len(outcome.simulated) == 1 and outcome.differences == []


def test_what_the_replay_cannot_reproduce_even_unchanged_is_not_blamed_on_the_change():
    stricter = {USER: LEVELS[USER].model_copy(update={"critical_drawdown_percent": 8})}
    record = recorded(stricter)  # the record was made under levels the replay is not told of
    outcome = what_if(HISTORY, record, guard=GUARD, recorded_levels=LEVELS,
                      changes=Changes.parse(["guard.critical_drawdown_percent=15"]))
    assert [(d.change, d.liquidation.loss_percent) for d in outcome.unreproduced] == [
        (WOULD_NOT, 9.0), (WOULD, 12.0)]
    assert outcome.simulated == [] and outcome.differences == []  # the 9 % one is unreproduced, not the change's
