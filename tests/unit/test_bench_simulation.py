"""The simulation benchmark measures what issue 14 asks: 10 accounts at 1 Hz over a trading day, beside real time."""

from __future__ import annotations

from datetime import timedelta

from bench import simulation


def test_the_scenario_is_ten_accounts_polled_each_second_through_a_whole_day() -> None:
    scenario = simulation.trading_day(86_400)
    assert len(scenario.accounts) == simulation.ACCOUNTS == 10
    assert scenario.poll_interval == 1.0
    assert scenario.end() - scenario.start == timedelta(days=1)
    assert scenario.start.weekday() == 0 and scenario.start.hour == 0  # Monday 00:00 UTC: a trading day


def test_a_short_run_reports_its_speed_in_one_and_two_processes_as_a_multiple_of_real_time() -> None:
    numbers = simulation.main(seconds=60, calls_seconds=30)
    assert numbers["simulated_seconds"] == 60 and numbers["polls"] == 61
    assert numbers["real_time: simulated_seconds_per_wall_second (baseline)"] == 1.0
    for run in ("jobs=1", "jobs=2"):
        assert numbers[f"{run}: times_real_time"] == numbers[f"{run}: simulated_seconds_per_wall_second"] > 1
        assert numbers[f"{run}: simulated_seconds_per_cpu_second"] > 1
    assert numbers["jobs=2: processes that played it to the end"] == 2
    assert numbers["target (>= 500x real time, wall clock) met by"] in ("jobs=1", "jobs=2", "jobs=1, jobs=2",
                                                                        "neither run")
    assert numbers["python_calls_per_account_poll (30 s profiled, jobs=1)"] > 0
