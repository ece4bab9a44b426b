"""``play(..., jobs=N)`` writes the very log one process writes: every library scenario, with each of its
accounts played three times over (so the shards split them), and a short bench day."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.simulation import trading_day
from simulation.runner import Outcome, play
from simulation.scenario import Scenario, load
from simulation.shards import shards

LIBRARY = Path(__file__).resolve().parents[3] / "docs" / "scenarios"
SCENARIOS = sorted(LIBRARY.glob("*.yaml"))
COPIES = 3


def crowded(scenario: Scenario, copies: int = COPIES) -> Scenario:
    """The scenario with each account ``copies`` times (ids ``ID.k``), each step played by every copy of
    its account, last copy first (its signal and position names made the copy's), market steps once;
    no expectations."""
    data = scenario.model_dump(exclude_unset=True)
    data["accounts"] = [{**a, "id": f"{a['id']}.{k}", **({"login": a["login"] + 1000 * k} if a.get("login") else {})}
                        for a in data.get("accounts", []) for k in range(copies)]
    steps: list[dict[str, Any]] = []
    for step in data.get("steps", []):
        (name, action), = ((n, a) for n, a in step.items() if n not in ("at", "after", "note"))
        if not isinstance(action, dict) or "account" not in action:
            steps.append(step)
            continue
        for k in reversed(range(copies)):  # the last copy's first: a step's place, not its shard, orders it
            mine = {key: f"{value}.{k}" if key in ("account", "signal", "name") and value else value
                    for key, value in action.items()}
            steps.append({**step, name: mine} | ({"after": 0} if k < copies - 1 and "after" in step else {}))
    return Scenario.model_validate({**data, "steps": steps, "expect": []})


def same(one: Outcome, many: Outcome) -> None:
    assert many.lines == one.lines
    assert (many.summary(), many.log.found, many.log.written) == (one.summary(), one.log.found, one.log.written)
    assert (many.polls, many.simulated_seconds) == (one.polls, one.simulated_seconds)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_each_library_scenario_crowded_gives_the_same_log_in_two_processes(path):
    scenario = crowded(load(path))
    same(play(scenario), play(scenario, jobs=2))


def test_a_short_bench_day_gives_the_same_log_in_two_processes_played_to_its_end():
    scenario = trading_day(600)
    lines: list[str] = []
    many = play(scenario, jobs=2, sink=lines.append)
    one = play(scenario)
    assert lines == one.lines and many.played_by == 2
    assert (many.summary(), many.log.written, many.polls) == (one.summary(), one.log.written, one.polls)


@pytest.mark.parametrize("name, played_by", [
    ("divergence-slippage", 2),  # decisions that only say something: the shards play to the end
    ("guard-drawdown-critical", 1),  # a liquidation's close trades on the shared server: one process from there
    ("guard-lock-and-unlock", 1),  # a lock changes what the platform places
])
def test_the_shards_play_to_the_end_unless_a_decision_acts_on_the_trade_server(name, played_by):
    scenario = crowded(load(LIBRARY / f"{name}.yaml"))
    lines: list[str] = []
    many = play(scenario, jobs=2, sink=lines.append)
    assert many.played_by == played_by
    assert lines == play(scenario).lines


def test_accounts_are_split_in_contiguous_shards_and_one_account_plays_in_one_process():
    assert shards(10, 2) == [range(0, 5), range(5, 10)]
    assert shards(5, 3) == [range(0, 2), range(2, 4), range(4, 5)]
    assert shards(2, 8) == [range(0, 1), range(1, 2)]
    single = load(LIBRARY / "divergence-slippage.yaml")
    assert len(single.accounts) == 1 and play(single, jobs=2).played_by == 1


def test_the_command_line_plays_in_parallel_with_jobs_and_says_when_it_played_again_in_one_process(tmp_path):
    from typer.testing import CliRunner

    from reconguard.cli import app

    runner, demo = CliRunner(), LIBRARY / "demo.yaml"
    done = runner.invoke(app, ["simulate", str(demo), "--jobs", "2", "--log", str(tmp_path / "two.jsonl")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "two.jsonl").read_text().splitlines() == play(load(demo)).lines
    assert "played again in one process" in " ".join(done.output.split())  # the demo liquidates
    refused = runner.invoke(app, ["simulate", str(demo), "--jobs", "2", "--pipeline"])
    assert refused.exit_code == 2
