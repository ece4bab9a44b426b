"""Every scenario of the library produces the decisions it must; a run is deterministic; bad files say where."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from simulation.runner import play, unmet
from simulation.scenario import SCHEMA_FILE, ScenarioError, json_schema, load, parse

LIBRARY = Path(__file__).resolve().parents[3] / "docs" / "scenarios"
SCENARIOS = sorted(LIBRARY.glob("*.yaml"))


def test_the_library_has_scenarios():
    assert len(SCENARIOS) >= 1


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_each_library_scenario_meets_its_expectations(path):
    scenario = load(path)
    assert scenario.expect, f"{path.name} expects nothing: a scenario must say what it has to produce"
    assert unmet(scenario, play(scenario)) == []


def test_the_same_file_and_seed_give_a_byte_identical_decision_log_and_another_seed_another_market():
    scenario = load(LIBRARY / "guard-drawdown-critical.yaml")
    first, second = play(scenario), play(scenario)
    assert first.lines == second.lines
    other = play(scenario, seed=scenario.seed + 1)
    assert other.lines != first.lines, "the seed drives the market's path"


@pytest.mark.parametrize("text, message", [
    ("name: x\naccounts:\n  - id: a\n    balance: -5\n", "<scenario>:4: accounts[0].balance: Input should be greater than 0"),
    ("name: x\naccounts: [{id: a}]\nsteps:\n  - at: 2s\n    gap: {symbol: EURUSD}\n",
     "<scenario>:5: steps[0].gap.percent: Field required"),
    ("name: x\naccounts: [{id: a}]\nsteps:\n  - at: soon\n    restart_worker: true\n",
     "<scenario>:4: steps[0].at"),
    ("name: x\naccounts: [{id: a}]\nsteps:\n  - at: 1s\n", "<scenario>:4: steps[0]: Value error, a step takes exactly one"),
    ("name: x\naccounts: [{id: a}]\nsteps:\n  - {at: 1s, deposit: {account: b, amount: 5}}\n",
     "unknown account 'b'"),
    ("name: x\naccounts: [{id: a, colour: red}]\n", "<scenario>:2: accounts[0].colour: Extra inputs are not permitted"),
    ("name: [x\n", "<scenario>:2: not valid YAML"),
], ids=["bad value", "missing field", "bad duration", "no action", "unknown account", "unknown field", "bad yaml"])
def test_a_bad_scenario_is_refused_naming_the_line_and_the_field(text, message):
    with pytest.raises(ScenarioError) as refused:
        parse(text)
    assert message in str(refused.value)


def test_the_published_json_schema_is_current():
    assert SCHEMA_FILE.read_text() == json_schema(), "run `reconguard docs` and commit docs/schemas"


def test_every_kind_of_step_is_played_by_some_library_scenario():
    from simulation.scenario import ACTIONS

    used = {step.action[0] for path in SCENARIOS for step in load(path).steps}
    assert set(ACTIONS) - used == set()


def test_the_command_line_prints_the_summary_writes_the_log_and_says_what_is_not_met(tmp_path):
    from typer.testing import CliRunner

    from reconguard.cli import app

    runner = CliRunner()
    log = tmp_path / "decisions.jsonl"
    done = runner.invoke(app, ["simulate", str(LIBRARY / "guard-drawdown-critical.yaml"), "--log", str(log)])
    assert done.exit_code == 0, done.output
    assert "expectations met" in done.output and "drawdown_critical/executed" in done.output
    assert log.read_text().splitlines() == play(load(LIBRARY / "guard-drawdown-critical.yaml")).lines

    unmet_file = tmp_path / "unmet.yaml"
    unmet_file.write_text((LIBRARY / "guard-drawdown-critical.yaml").read_text()
                          .replace("critical_drawdown_percent: 6", "critical_drawdown_percent: 60"))
    assert runner.invoke(app, ["simulate", str(unmet_file)]).exit_code == 1

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\naccounts:\n  - id: a\n    leverage: 0\n")
    refused = runner.invoke(app, ["simulate", str(bad)])
    assert refused.exit_code == 2 and "bad.yaml:4: accounts[0].leverage" in refused.output


def test_a_log_streamed_to_a_sink_is_the_kept_log_and_counts_the_same_summary_and_expectations():
    scenario = load(LIBRARY / "guard-drawdown-critical.yaml")
    kept, written = play(scenario), []
    streamed = play(scenario, sink=written.append)
    assert written == kept.lines and streamed.log.written == len(written)
    assert streamed.summary() == kept.summary() and streamed.log.found == kept.log.found
    assert unmet(scenario, streamed) == []
    with pytest.raises(ValueError):
        streamed.lines  # noqa: B018 -- the log went to its sink: it was not kept


def test_the_broker_clock_in_the_log_moves_from_utc_plus_2_to_plus_3_when_new_york_starts_summer_time():
    scenario = parse("""
name: dst
start: 2024-03-09T12:00:00Z
poll_interval: 1h
duration: 1d12h
accounts: [{id: u-alice}]
""")
    offsets = {}
    for d in play(scenario).decisions:
        if d["type"] == "AccountReport":
            utc, broker = (datetime.fromisoformat(d[k].removesuffix("Z")) for k in ("utc", "broker"))
            offsets[d["utc"][:10]] = (broker - utc).total_seconds() / 3600
    assert offsets["2024-03-09"] == 2 and offsets["2024-03-10"] == 3  # New York: 2024-03-10 07:00 UTC


def test_an_event_a_rule_raises_on_is_dead_lettered_in_the_log_and_the_run_goes_on(monkeypatch):
    from streams.market import rules as market

    def broken(state, event, config):
        raise RuntimeError("boom")

    monkeypatch.setattr(market, "handle", broken)
    outcome = play(load(LIBRARY / "guard-drawdown-critical.yaml"))
    dead = [d for d in outcome.decisions if "dead_lettered" in d]
    assert dead and dead[0]["dead_lettered"] == "market rule failed: RuntimeError('boom')"
    assert any(d["type"] == "PositionClosed" for d in outcome.decisions), "the other rules went on"


def test_an_account_whose_clock_rule_is_wrong_reads_the_broker_clock_off_by_the_difference():
    text = """
name: clock
duration: 5s
accounts:
  - {id: u-right, server_clock: new-york-close}
  - {id: u-wrong, server_clock: "UTC+00:00"}
"""
    reports = {d["account"]: d for d in play(parse(text), log_reports=True).decisions if d["type"] == "AccountReport"}
    right, wrong = reports["u-right"], reports["u-wrong"]
    assert right["utc"] == wrong["utc"] == "2024-01-08T08:00:05Z"
    assert right["broker"] == wrong["broker"] == "2024-01-08T10:00:05", "the broker's real clock: UTC+2"
    assert right["server_time"].startswith("2024-01-08T10:00:05"), "the poller reads the clock right"
    assert wrong["server_time"].startswith("2024-01-08T08:00:05"), "a wrong rule: the poller is 2 h off"
    with pytest.raises(ScenarioError, match="server_clock"):
        parse(text.replace('"UTC+00:00"', "mars-time"))
