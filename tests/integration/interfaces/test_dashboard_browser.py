"""The dashboard in a real headless Chromium, against the API over seeded Postgres: the charts
draw every snapshot; a screenshot is kept in test-artifacts/."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.interfaces.support import insert_rows, seed_people, served_api, snapshot_rows
from tests.support.browser import ARTIFACTS, CHROMIUM
from tests.support.browser import chromium as _chromium
from tests.support.browser import series as _series

pytestmark = pytest.mark.integration

POINTS = 40


@pytest.fixture(scope="module")
def people(database_url):
    people = asyncio.run(seed_people(database_url, tag="ui"))
    asyncio.run(
        insert_rows(
            database_url,
            snapshots=snapshot_rows(people.owner, count=POINTS)
            + snapshot_rows(people.other, count=POINTS // 2),
        )
    )
    return people


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`)")
def test_the_dashboard_draws_each_accounts_equity_and_drawdown(settings, people, tmp_path):
    with served_api(settings) as base_url:
        url = f"{base_url}/dashboard#token={people.tokens['admin']}"
        dom = _chromium(url, tmp_path / "profile", "--dump-dom")
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "dashboard.png"
        screenshot.unlink(missing_ok=True)
        _chromium(url, tmp_path / "profile-shot", f"--screenshot={screenshot}")

    equity, drawdown = (
        dict((a, (n, d)) for a, n, d in _series(dom, "equity")),
        dict((a, (n, d)) for a, n, d in _series(dom, "drawdown")),
    )
    assert equity.get(people.owner) == (POINTS, POINTS), dom[:3000]
    assert drawdown.get(people.owner) == (POINTS, POINTS)
    assert equity.get(people.other) == (POINTS // 2, POINTS // 2)
    assert 'class="threshold critical"' in dom and "updated" in dom
    assert people.tokens["admin"] not in dom, "the token must leave the address bar and the page"
    assert screenshot.stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`)")
def test_a_trader_sees_only_their_own_account(settings, people, tmp_path):
    with served_api(settings) as base_url:
        dom = _chromium(f"{base_url}/dashboard#token={people.tokens['other']}", tmp_path / "p", "--dump-dom")
    assert [a for a, _, _ in _series(dom, "equity")] == [people.other]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`)")
def test_without_a_token_the_page_asks_for_one(settings, people, tmp_path):
    with served_api(settings) as base_url:
        dom = _chromium(f"{base_url}/dashboard", tmp_path / "p", "--dump-dom")
    assert '<section id="login">' in dom and "an API token is needed" in dom
    assert _series(dom, "equity") == []
