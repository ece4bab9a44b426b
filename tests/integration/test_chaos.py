"""A short seeded chaos round (`make chaos` runs five long ones): every fault once, with real processes
and real signals, over the separate-process topology at a small load."""

from __future__ import annotations

import pytest

from chaos.run import Options, run_chaos

INVARIANTS = ("rows lost", "rows extra", "rows changed", "closed twice", "opened by a close", "not executed",
              "notice < grace", "late")


@pytest.mark.timeout(900)
def test_a_short_seeded_round_keeps_every_invariant(tmp_path, capsys):
    (result,) = run_chaos(Options(seed=7, rounds=1, accounts=20, round_seconds=50, directory=tmp_path / "chaos"))
    assert len(result.faults) == 10, "every kind of fault was done"
    assert result.due >= 1, "at least one liquidation was due, so the liquidation checks judged something"
    broken = {k: result.counts[k] for k in INVARIANTS if result.counts[k]}
    assert not broken, "\n".join([str(broken), *result.notes])
