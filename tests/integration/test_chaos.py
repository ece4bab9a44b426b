"""A short seeded chaos round (`make chaos` runs five long ones): every fault once, with real processes
and real signals, over the separate-process topology at a small load."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.run import Options, RoundResult, run_chaos

NEVER_BROKEN = ("rows lost", "rows extra", "rows changed", "closed twice", "opened by a close")
LIQUIDATION_PROMISES = ("not executed", "drives not closed", "notice < grace", "late")
#: A service that exited by itself (the harness restarts it, as an orchestrator would): none may.
SERVICES_KEPT = ("service crashes",)


@pytest.fixture(scope="module")
def chaos_round(tmp_path_factory: pytest.TempPathFactory) -> RoundResult:
    directory: Path = tmp_path_factory.mktemp("chaos")
    (result,) = run_chaos(Options(seed=7, rounds=1, accounts=20, round_seconds=50, directory=directory))
    print("\n".join([str(result.counts), result.liquidations, *result.notes]))
    return result


@pytest.mark.timeout(900)
def test_every_fault_keeps_the_tables_equal_to_the_log_and_closes_single(chaos_round):
    assert len(chaos_round.faults) == 10, "every kind of fault was done"
    broken = {k: chaos_round.counts[k] for k in NEVER_BROKEN if chaos_round.counts[k]}
    assert not broken, "\n".join([str(broken), *chaos_round.notes])


@pytest.mark.timeout(900)
def test_every_liquidation_is_executed_with_full_notice_and_on_time(chaos_round):
    assert chaos_round.due >= 1, "at least one liquidation was due, so the checks judged something"
    broken = {k: chaos_round.counts[k] for k in LIQUIDATION_PROMISES if chaos_round.counts[k]}
    assert not broken, "\n".join([str(broken), *chaos_round.notes])


@pytest.mark.timeout(900)
def test_no_service_exits_by_itself_whatever_its_servers_do(chaos_round):
    broken = {k: chaos_round.counts[k] for k in SERVICES_KEPT if chaos_round.counts[k]}
    assert not broken, "\n".join([str(broken), *chaos_round.notes])
