"""Guard profiles assigned through the API and the command line reach the worker's levels (real Postgres).

The worker reads per-account levels with ``AccountLevelsBook`` (streams/levels.py) and hands
``book.get(account)`` to the drawdown rules (streams/app.py); this test does the same with the
book it refreshes from the database the API wrote.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from typer.testing import CliRunner

from infra.settings import Settings
from reconguard.cli import app as cli
from schemas import observed
from schemas.reports import AccountReport, ObservedPosition, PositionReport
from streams.drawdown.rules import handle
from streams.drawdown.state import DrawdownState
from streams.levels import AccountLevelsBook
from tests.integration.interfaces.support import People, seed_people, served_api
from tests.unit.streams.builders import at, position

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def people(settings: Settings) -> People:
    return asyncio.run(seed_people(settings.database_url, tag="profiles"))


@pytest.fixture(scope="module")
def api(settings: Settings, people: People):
    with served_api(settings) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


def worker_levels(settings: Settings):
    book = AccountLevelsBook(settings.database_url)
    asyncio.run(book.refresh())
    return book


def alerts_after_a_fall(account: str, settings: Settings) -> list:
    """The drawdown rules, with the levels the worker's book gives ``account``, on a 12 % fall."""
    levels = worker_levels(settings).get(account)
    held: tuple[ObservedPosition, ...] = (position(1001, profit_gbp=-1_200),)
    events = [observed(PositionReport(user_id=account, login=5001, poll_seq=0, positions=held), account_id=account,
                       occurred_at=at(0.5))]
    for t, equity in ((0.75, 10_000), (1, 10_000), (2, 8_800), (3, 8_800)):
        events.append(observed(AccountReport(
            user_id=account, login=5001, server="Demo", currency="GBP", poll_seq=int(t * 4), balance=10_000,
            equity=equity, profit=equity - 10_000, margin=100, margin_free=equity - 100, margin_level=0,
            gbp_rate=1.0), account_id=account, occurred_at=at(t)))
    state, outputs = DrawdownState(), []
    for event in events:
        decision = handle(state, event, levels, settings.guard, event.occurred_at)
        state, outputs = decision.state, outputs + list(decision.outputs)
    return [o.payload for o in outputs if o.event_type == "GuardAlertRaised"]


def test_the_profiles_are_listed_with_their_versions(api, people):
    listed = api.get("/guard-profiles", headers=people.headers("other"))
    assert listed.status_code == 200
    assert {(p["name"], p["version"]) for p in listed.json()} >= {("default", 1), ("prop-static", 1)}
    assert api.get("/guard-profiles").status_code == 401


def test_an_admin_assigns_a_profile_through_the_api_and_the_worker_decides_with_it(api, people, settings):
    assert [a.details["profile"]["name"] for a in alerts_after_a_fall(people.owner, settings)] == ["default"]
    body = {"profile": "prop-static", "initial_balance_gbp": 10000}
    assert api.put(f"/users/{people.owner}/guard-profile", json=body,
                   headers=people.headers("owner")).status_code == 403, "a trader may not choose their rules"
    assert api.put(f"/users/{people.owner}/guard-profile", json={"profile": "lenient"},
                   headers=people.headers("admin")).status_code == 400
    assert api.put("/users/nobody/guard-profile", json=body, headers=people.headers("admin")).status_code == 404
    done = api.put(f"/users/{people.owner}/guard-profile", json=body, headers=people.headers("admin"))
    assert done.status_code == 200 and done.json()["version"] == 1, done.text

    levels = worker_levels(settings).get(people.owner)
    assert (levels.profile, levels.initial_balance_gbp) == ("prop-static", 10_000)
    alerts = alerts_after_a_fall(people.owner, settings)
    assert [(a.alert_type.value, a.details["profile"]) for a in alerts] == [
        ("drawdown_critical", {"name": "prop-static", "version": 1, "family": "static"})]
    assert alerts[0].details["max_loss_floor_gbp"] == 9_000


def test_the_command_line_assigns_a_profile(settings, people, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    runner = CliRunner()
    unknown = runner.invoke(cli, ["users", "profile", people.other, "lenient"])
    assert unknown.exit_code == 2 and "no guard profile 'lenient'" in unknown.output
    done = runner.invoke(cli, ["users", "profile", people.other, "prop-trailing", "--initial-balance", "50000"])
    assert done.exit_code == 0, done.output
    levels = worker_levels(settings).get(people.other)
    assert (levels.profile, levels.initial_balance_gbp) == ("prop-trailing", 50_000)
    listed = runner.invoke(cli, ["users", "profiles"])
    assert listed.exit_code == 0 and "prop-trailing-eod" in listed.output
