"""Who may call what: every endpoint with four callers, and the rules of tokens.

The callers: anonymous (no token), the owner of the data, another trader, and an admin.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import httpx
import pytest

from infra.db import make_engine, make_sessionmaker
from reconguard.users import issue_token, list_tokens, revoke_token
from schemas import utcnow
from tests.integration.interfaces.support import people_with_data, served_api

pytestmark = pytest.mark.integration

CALLERS = ("anonymous", "owner", "other", "admin")


@pytest.fixture(scope="module")
def people(database_url):
    return people_with_data(database_url, tag="acc", snapshots=5, at=utcnow() - timedelta(minutes=1))


@pytest.fixture(scope="module")
def api(settings, people):
    with served_api(settings) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


def _call(api: httpx.Client, people, who: str, method: str, path: str) -> httpx.Response:
    headers = people.headers(None if who == "anonymous" else who)
    return api.request(method, path.format(owner=people.owner), headers=headers)


# Expected status per caller, in the order of CALLERS.
OWNER_OR_ADMIN = (401, 200, 403, 200)
ANY_TOKEN = (401, 200, 200, 200)
ADMIN_ONLY = (401, 403, 403, 200)
PUBLIC = (200, 200, 200, 200)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        pytest.param("GET", "/me", ANY_TOKEN, id="me: any valid token"),
        pytest.param("GET", "/users", ADMIN_ONLY, id="list users: admins only"),
        pytest.param("GET", "/users/{owner}", OWNER_OR_ADMIN, id="user profile: owner or admin"),
        pytest.param(
            "GET", "/users/{owner}/status", OWNER_OR_ADMIN, id="reconciliation status: owner or admin"
        ),
        pytest.param("GET", "/users/{owner}/logs", OWNER_OR_ADMIN, id="reconciliation logs: owner or admin"),
        pytest.param("GET", "/users/{owner}/snapshots", OWNER_OR_ADMIN, id="snapshots: owner or admin"),
        pytest.param("GET", "/users/{owner}/alerts", OWNER_OR_ADMIN, id="alerts: owner or admin"),
        pytest.param("GET", "/overview", ANY_TOKEN, id="dashboard data: any token, own accounts only"),
        pytest.param("GET", "/health", PUBLIC, id="health: public"),
        pytest.param("GET", "/metrics", ADMIN_ONLY, id="metrics: admins (or the metrics token), never anonymous"),
        pytest.param("GET", "/openapi.json", PUBLIC, id="openapi: public"),
        pytest.param("GET", "/dashboard", PUBLIC, id="dashboard page: public, its data is not"),
    ],
)
def test_each_caller_gets_exactly_what_the_rules_say(api, people, method, path, expected):
    got = tuple(_call(api, people, who, method, path).status_code for who in CALLERS)
    assert got == expected, dict(zip(CALLERS, got, strict=True))


def test_sync_is_for_admins_only(api, people):
    # Owner and other first: a refused call must not use up the account's 10 s slot.
    got = tuple(_call(api, people, who, "POST", "/users/{owner}/sync").status_code for who in CALLERS)
    assert got == (401, 403, 403, 202), dict(zip(CALLERS, got, strict=True))


def test_data_of_the_owner_is_what_the_owner_and_admin_see(api, people):
    for who in ("owner", "admin"):
        page = _call(api, people, who, "GET", "/users/{owner}/snapshots").json()
        assert len(page["items"]) == 5 and {i["user_id"] for i in page["items"]} == {people.owner}


def test_overview_shows_a_trader_only_their_own_account(api, people):
    def accounts(who: str) -> set[str]:
        return {a["user_id"] for a in _call(api, people, who, "GET", "/overview").json()["accounts"]}

    assert accounts("owner") == {people.owner}
    assert accounts("other") == {people.other}
    shown = accounts("admin")
    assert {people.owner, people.other} <= shown
    assert people.admin not in shown, "an admin without an MT5 account has no account to show"


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        pytest.param("admin", 404, id="admin: unknown user is 404"),
        pytest.param("owner", 403, id="trader: unknown user is 403, so ids cannot be probed"),
    ],
)
@pytest.mark.parametrize("suffix", ["", "/status", "/logs", "/snapshots", "/alerts"])
def test_unknown_user(api, people, who, expected, suffix):
    assert _call(api, people, who, "GET", f"/users/nobody-here{suffix}").status_code == expected


def test_sync_of_an_unknown_user_is_404_for_an_admin(api, people):
    assert _call(api, people, "admin", "POST", "/users/nobody-here/sync").status_code == 404


@pytest.mark.parametrize(
    ("header", "secret"),
    [
        pytest.param("Bearer rg_not-a-token", "rg_not-a-token", id="unknown token"),
        pytest.param("Bearer", None, id="scheme without a token"),
        pytest.param("Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", id="another scheme"),
        pytest.param("Bearer " + "x" * 5000, "x" * 5000, id="absurdly long token"),
        pytest.param("rg_token-without-scheme", "rg_token-without-scheme", id="no scheme"),
    ],
)
def test_bad_credentials_are_401_and_never_echoed(api, people, header, secret):
    response = api.get(f"/users/{people.owner}", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    if secret is not None:
        assert secret not in response.text


def test_a_revoked_token_stops_working(api, people, database_url):
    async def issue_then_revoke() -> tuple[str, callable]:
        engine = make_engine(database_url)
        sessions = make_sessionmaker(engine)
        issued = await issue_token(sessions=sessions, user_id=people.owner, name="short-lived")
        await engine.dispose()
        return issued

    async def revoke(token_id) -> list:
        engine = make_engine(database_url)
        sessions = make_sessionmaker(engine)
        await revoke_token(sessions=sessions, token_id=token_id)
        tokens = await list_tokens(sessions=sessions, user_id=people.owner)
        await engine.dispose()
        return tokens

    issued = asyncio.run(issue_then_revoke())
    headers = {"Authorization": f"Bearer {issued.token}"}
    assert api.get("/me", headers=headers).status_code == 200
    tokens = asyncio.run(revoke(issued.token_id))
    assert api.get("/me", headers=headers).status_code == 401
    listed = {t.token_id: t for t in tokens}
    assert listed[issued.token_id].revoked_at is not None and listed[issued.token_id].last_used_at is not None


def test_tokens_never_reach_the_logs(api, people, caplog):
    token = people.tokens["owner"]
    with caplog.at_level(logging.DEBUG):
        api.get(f"/users/{people.owner}", headers=people.headers("owner"))
        api.get(f"/dashboard?token={token}")
        api.get("/me", headers={"Authorization": f"Bearer {token}x"})
    # The test's own HTTP client logs its URLs; only the server's records count.
    server_lines = [r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any("/dashboard" in line for line in server_lines), (
        "the API logged nothing: this test proves nothing"
    )
    assert not [line for line in server_lines if token in line]
