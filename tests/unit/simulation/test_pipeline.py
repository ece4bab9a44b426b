"""What `simulate --pipeline` compares and refuses, without a broker: the comparison of decision logs
(``simulation.pipeline.compared``) and the scenarios refused before anything starts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconguard.cli import app
from simulation.pipeline import NotForPipeline, check, compared
from simulation.runner import play
from simulation.scenario import load

LIBRARY = Path(__file__).resolve().parents[3] / "docs" / "scenarios"


@pytest.fixture(scope="module")
def decisions() -> list[dict]:
    return play(load(LIBRARY / "guard-drawdown-critical.yaml")).decisions


def _changed(decisions: list[dict], change) -> list[dict]:
    changed = copy.deepcopy(decisions)
    for d in changed:
        change(d)
    return changed


def test_times_ids_prices_and_per_poll_decisions_are_not_compared(decisions):
    def as_if_live(d: dict) -> None:
        d["utc"], d["broker"] = "2026-12-02T11:00:00.123456Z", "2026-12-02T13:00:00.123456"
        d["id"] = "00000000-0000-0000-0000-000000000000"
        for key in ("price", "entry_price", "pnl", "pnl_gbp", "equity_gbp", "closed_price", "current_price"):
            if key in d.get("payload", {}):
                d["payload"][key] = 1.2345
    live = _changed(decisions, as_if_live)
    live += [d for d in decisions if d["type"] in ("AccountReport", "AccountAssessed")]  # more polls
    assert compared(live) == compared(decisions)


@pytest.mark.parametrize("what, change", [
    ("a close command missing", lambda ds: [d for d in ds if d["type"] != "ClosePosition"]),
    ("a close command twice", lambda ds: ds + [d for d in ds if d["type"] == "ClosePosition"]),
    ("another alert status", lambda ds: _changed(ds, lambda d: d.get("payload", {}).get("status") == "executed"
                                                 and d["payload"].update(status="failed"))),
    ("another ticket closed", lambda ds: _changed(ds, lambda d: d["type"] == "PositionClosed"
                                                  and d["payload"].update(ticket=100000002))),
    ("another account", lambda ds: _changed(ds, lambda d: d["type"] == "AccountLocked" and d.update(account="u-x"))),
])
def test_a_different_decision_is_seen(decisions, what, change):
    assert compared(change(decisions)) != compared(decisions), what


def test_the_library_scenarios_the_pipeline_cannot_play_are_the_calendar_and_hook_ones():
    refused = {}
    for path in sorted(LIBRARY.glob("*.yaml")):
        try:
            check(load(path))
        except NotForPipeline as error:
            refused[path.stem] = str(error)
    assert sorted(refused) == ["close-deferred-over-the-weekend", "close-worker-restart",
                               "quality-bad-conversion-rate"], refused


@pytest.mark.parametrize("scenario, message", [
    ("quality-bad-conversion-rate", "steps[1].bad_rate: not supported with --pipeline"),
    ("close-deferred-over-the-weekend", "lasts 173700 s; --pipeline plays it on the wall clock"),
])
def test_a_scenario_the_pipeline_cannot_play_is_refused_before_anything_starts(scenario, message, tmp_path):
    result = CliRunner().invoke(app, ["simulate", "--pipeline", str(LIBRARY / f"{scenario}.yaml")],
                                env={"RECONGUARD_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "simulate").exists(), "no server was started"


def test_the_steps_played_through_the_pipeline_and_those_refused_with_a_reason_are_kinds_of_step():
    """A kind of step in neither list (a new one) is refused too, as "not played through the pipeline yet"."""
    from simulation.pipeline import SUPPORTED, UNSUPPORTED
    from simulation.scenario import ACTIONS

    assert SUPPORTED <= set(ACTIONS)
    assert set(UNSUPPORTED) <= set(ACTIONS) - SUPPORTED
