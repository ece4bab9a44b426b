"""The in-memory worker: the worker's routing, its read-back of close commands, its timer, a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

from infra.settings import GuardSettings, Settings
from schemas import Envelope
from simulation.worker import RULES, Worker, on_grid, replay
from streams.app import create_app
from streams.market import rules as market
from tests.unit.streams.builders import USER, account, at, position, positions, tick
from tests.unit.streams.test_drawdown_rules import LEVELS

HELD = positions(position(1001, profit_gbp=-400), position(1003, symbol="XAUUSD", profit_gbp=-500), t=0.5)
CRASH = [account(10_000, t=0.75), account(10_000, t=1), account(8_900, t=2), account(8_800, t=3)]


def worker() -> Worker:
    return Worker(GuardSettings(), levels=lambda account_id: LEVELS)


def kinds(outputs: list[Any]) -> list[str]:
    return [(o[1] if isinstance(o, tuple) else o).event_type for o in outputs]


def test_the_processors_read_what_the_streams_runtime_routes_to_them():
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", database_url=None)
    runtime = create_app(settings, name="routes-check").streams_runtime
    assert [(p.name, p.reads, p.store.state_type) for p in runtime.processors] == \
        [(r.name, r.reads, r.state_type) for r in RULES]


def test_a_critical_breach_warns_then_the_sweep_closes_and_the_tracker_reads_the_commands_back():
    w = worker()
    decided = [o for e in [HELD, *CRASH] for o in w.process(e)]
    warning = [o for o in decided if o.event_type == "GuardAlertRaised"]
    assert [a.payload.action_taken.value for a in warning] == ["warning_sent"]
    deadline = w.next_due()
    assert deadline == at(3) + timedelta(seconds=LEVELS.close_grace_seconds)
    assert w.sweep(deadline - timedelta(seconds=0.1)) == []
    fired = w.sweep(deadline)
    assert kinds(fired)[:2] == ["ClosePosition", "ClosePosition"]
    commands = [o.payload for o in fired if o.event_type == "ClosePosition"]
    assert sorted((c.symbol, c.tickets) for c in commands) == [("EURUSD", (1001,)), ("XAUUSD", (1003,))]
    # read back from close-commands: the tracker says "ordered", the drawdown guard locks the account
    assert "AccountLocked" in kinds(fired)
    assert [o.payload.status for o in fired if o.event_type == "GuardAlertRaised"] == ["ordered"]


def test_replay_sweeps_on_the_timer_grid_and_gives_the_same_ids_every_time():
    def run() -> list[tuple[datetime, Envelope[Any]]]:
        return list(replay(worker(), [HELD, *CRASH], until=at(60)))

    first, second = run(), run()
    assert [(t, o.event_id) for t, o in first] == [(t, o.event_id) for t, o in second]
    closes = [t for t, o in first if o.event_type == "ClosePosition"]
    assert closes[:2] == [on_grid(at(13), timedelta(seconds=0.2))] * 2, "the two symbols' closes at the deadline"
    assert all(t > at(13) for t in closes[2:]), "then the unanswered closes' retries"


def test_unanswered_closes_are_retried_by_the_sweep_until_they_escalate():
    w = worker()
    out = [o for _, o in replay(w, [HELD, *CRASH], until=at(600))]
    statuses = [o.payload.status for o in out if o.event_type == "GuardAlertRaised"]
    assert statuses[:3] == ["open", "ordered", "failed"] and "escalated" in statuses
    assert sum(o.event_type == "ClosePosition" for o in out) > 2, "retries go out as new commands"


def test_a_restart_keeps_a_pending_liquidation_from_the_tables():
    w = worker()
    for event in [HELD, *CRASH]:
        w.process(event)
    due = w.next_due()
    w.restart()
    assert w.next_due() == due
    assert any(o.event_type == "ClosePosition" for o in w.sweep(due))


def test_on_grid_rounds_up_to_the_timer_tick():
    t = datetime(2026, 1, 5, 8, 0, 0, 100_000, tzinfo=UTC)
    assert on_grid(t, timedelta(seconds=0.2)) == t + timedelta(seconds=0.1)
    assert on_grid(t + timedelta(seconds=0.1), timedelta(seconds=0.2)) == t + timedelta(seconds=0.1)


def _quoted(w: Worker, event: Envelope[Any], made: list[Envelope[Any]]) -> list[Envelope[Any]]:
    def envelope() -> Envelope[Any]:
        made.append(event)
        return event
    return w.quote(event.account_id, event.payload, event.occurred_at, envelope)


def test_a_quote_without_its_envelope_decides_what_its_tick_report_decides():
    """``Worker.quote`` stands in for ``process`` of a tick report: the same state, closes and read-back,
    the same dead letter when the rule fails; the envelope is made for a close or a failure only."""
    ticks = [tick(t=1), tick(t=2), tick(t=3, spread_points=500), tick(t=4, bid=1.2), tick("XAUUSD", bid=2000, t=5,
             point=0.01, spread_points=30), tick("GBPUSD", t=6), tick(t=100, quoted=60)]
    by_envelope, by_quote, made = worker(), worker(), []
    for w in (by_envelope, by_quote):
        w.process(HELD)
    for event in ticks:
        expected = by_envelope.process(event)
        assert [(o.event_id, o.payload) for o in _quoted(by_quote, event, made)] == \
            [(o.event_id, o.payload) for o in expected], event.payload
    assert by_quote.states == by_envelope.states and kinds(made) == ["TickReport"] * len(made)
    assert 0 < len(made) < len(ticks)  # the breaches (spread, gap, stale) only
    bad = tick(t=200)
    with mock.patch.object(market, "assess", side_effect=ValueError("bad quote")):
        assert by_envelope.process(bad) == [] == _quoted(by_quote, bad, made)
    assert [(f.rule, f.event.event_id, f.error) for f in by_quote.failures] == \
        [(f.rule, f.event.event_id, f.error) for f in by_envelope.failures] != []
    assert by_quote.states == by_envelope.states and by_quote.state("market", USER).quotes
