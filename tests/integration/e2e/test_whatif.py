"""``reconguard whatif`` on a recorded ``make run`` demo (real broker and Postgres).

The demo liquidates dave, last, and usually bob before him (on a loaded machine the broker's
stop-out can close bob first, and another account may be liquidated instead). Replayed with the
levels in force, nothing differs; with the critical drawdown level raised far above their losses,
every real liquidation is listed as one that would not have happened; with it lowered, earlier
liquidations at smaller losses are listed as ones that would have happened.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from typer.testing import CliRunner

from infra.settings import Settings
from producers.demo.script import default_script
from producers.demo.service import demo_broker
from reconguard.cli import app as cli
from reconguard.console import console
from projections import archive
from schemas.topics import CLOSE_COMMANDS
from simulation.whatif_history import DECIDED, REPLAYED
from tests.integration.e2e.pipeline import Pipeline
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

GUARD_REASONS = {"drawdown_guard", "daily_loss_guard"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def recorded(settings: Settings) -> AsyncIterator[Settings]:
    """A demo run, stopped once the guard has liquidated dave (its last): its topics are the record."""
    demo = Pipeline(settings, broker=demo_broker(), steps=default_script())
    try:
        await demo.start()

        async def liquidated() -> set[str]:
            return {c.account_id for c in await demo.whole_topic(CLOSE_COMMANDS)
                    if c.payload.reason.value in GUARD_REASONS}

        await demo.wait_for(liquidated, until=lambda who: "u-dave" in who, timeout=300,
                            interval=2.0, what="the demo's liquidation of dave")
        demo.stop_event.set()  # the record is complete: the archive catches up with it alone
        await asyncio.gather(*demo.services.values(), return_exceptions=True)
        archiver = asyncio.create_task(archive.serve(settings, stop=(done := asyncio.Event())))
        on_log = sum([len(await demo.whole_topic(t)) for t in (*REPLAYED, *DECIDED)])
        await eventually(lambda: demo.rows("SELECT count(*) AS n FROM event_archive WHERE topic = ANY($1)",
                                              [t.name(settings.topic_prefix) for t in (*REPLAYED, *DECIDED)]),
                            until=lambda rows: rows[0]["n"] >= on_log, what="the record archived", timeout=60)
        done.set()
        await archiver
    finally:
        await demo.stop()
    yield settings


def whatif(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> dict[str, Any]:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers or "")
    monkeypatch.setenv("DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("RECONGUARD_TOPIC_PREFIX", settings.topic_prefix)
    result = CliRunner().invoke(cli, ["whatif", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def changes(outcome: dict[str, Any], change: str) -> set[tuple[str, str]]:
    return {(d["account_id"], d["reason"]) for d in outcome["differences"] if d["change"] == change}


def test_with_the_levels_in_force_the_replay_decides_what_really_happened(recorded, monkeypatch):
    outcome = whatif(recorded, monkeypatch)
    assert outcome["real_liquidations"] >= 1 and outcome["differences"] == [], outcome
    # dave's liquidation races nothing, so the replay makes it exactly (a stop-out can beat bob's grace)
    assert "u-dave" not in {d["account_id"] for d in outcome["unreproduced"]}, outcome


def test_the_archive_gives_the_same_answer_as_the_log(recorded, monkeypatch):
    raised = ("--set", "guard.critical_drawdown_percent=95", "--set", "guard.daily_loss_limit_percent=95")
    from_log = whatif(recorded, monkeypatch, *raised)
    assert whatif(recorded, monkeypatch, *raised, "--source", "archive") == from_log
    assert from_log["differences"]


def really_liquidated(outcome: dict[str, Any]) -> set[str]:
    return {d["account_id"] for d in outcome["differences"] if d["change"] == "would_not_have_happened"}


def test_a_higher_critical_level_lists_the_liquidations_that_would_not_have_happened(recorded, monkeypatch):
    outcome = whatif(recorded, monkeypatch, "--set", "guard.critical_drawdown_percent=95",
                     "--set", "guard.daily_loss_limit_percent=95")
    assert len(changes(outcome, "would_not_have_happened")) == outcome["real_liquidations"] >= 1, outcome
    assert "u-dave" in really_liquidated(outcome) and changes(outcome, "would_have_happened") == set(), outcome
    assert all(d["loss_percent"] < 95 for d in outcome["differences"])


def test_a_lower_critical_level_lists_the_liquidations_that_would_have_happened(recorded, monkeypatch):
    lowered = ("--set", "guard.critical_drawdown_percent=1.5", "--set", "guard.warning_drawdown_percent=1")
    outcome = whatif(recorded, monkeypatch, *lowered)
    would = {d["account_id"]: d for d in outcome["differences"] if d["change"] == "would_have_happened"}
    real = {d["account_id"]: d for d in outcome["differences"] if d["change"] == "would_not_have_happened"}
    assert "u-dave" in would and set(real) >= {"u-dave"}, outcome
    for account in set(would) & set(real):  # earlier, and at a smaller loss, than what really happened
        assert (would[account]["reason"], would[account]["threshold_percent"]) == ("drawdown_guard", 1.5)
        assert 1.5 <= would[account]["loss_percent"] < real[account]["loss_percent"], outcome
        assert would[account]["ordered_at"] < real[account]["ordered_at"], outcome
    monkeypatch.setattr(console, "width", 160)
    shown = CliRunner().invoke(cli, ["whatif", *lowered, "--account", "u-dave"])
    rows = [line for line in shown.output.splitlines() if "u-dave" in line]
    assert shown.exit_code == 0 and len(rows) == 2, shown.output
    assert "would not" in rows[1] and "would not" not in rows[0] and "drawdown_guard" in rows[0], shown.output
