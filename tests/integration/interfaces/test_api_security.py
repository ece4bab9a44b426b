"""What an attacker on the network sees of the API: no account data without a token, forged
input answered 400, an unexpected failure answered with a short 500 and one log line, and the
security headers on every response (Swagger UI served from the package, under a strict policy)."""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr

from reconguard.api.app import create_app
from schemas import utcnow
from tests.integration.interfaces.support import people_with_data, served_api

pytestmark = pytest.mark.integration

METRICS_TOKEN = "metrics-" + "m" * 32


@pytest.fixture(scope="module")
def people(database_url):
    return people_with_data(database_url, tag="sec", snapshots=3, at=utcnow() - timedelta(minutes=1))


def _with_api(settings, **api):
    return settings.model_copy(update={"api": settings.api.model_copy(update=api)})


@pytest.fixture(scope="module")
def api(settings, people):
    from infra import metrics

    metrics.account_equity_gbp.labels(account=people.owner).set(12_345.67)  # as the worker would
    with served_api(_with_api(settings, metrics_token=SecretStr(METRICS_TOKEN))) as base_url, \
            httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------------------------------ /metrics

@pytest.mark.parametrize(
    ("who", "expected"),
    [
        pytest.param(None, 401, id="anonymous: refused"),
        pytest.param("owner", 403, id="a trader: refused"),
        pytest.param("admin", 200, id="an admin: served"),
        pytest.param("metrics", 200, id="the metrics token (Prometheus): served"),
        pytest.param("wrong", 401, id="a wrong token: refused"),
    ],
)
def test_metrics_need_the_metrics_token_or_an_admin(api, people, who, expected):
    special = {None: {}, "metrics": _bearer(METRICS_TOKEN), "wrong": _bearer(METRICS_TOKEN + "x")}
    headers = special[who] if who in special else people.headers(who)
    response = api.get("/metrics", headers=headers)
    assert response.status_code == expected
    if expected != 200:
        assert "account_equity_gbp" not in response.text
        assert people.owner not in response.text


def test_an_anonymous_scrape_returns_no_account_data(api, people):
    response = api.get("/metrics")
    assert response.status_code == 401
    assert "12345" not in response.text and people.owner not in response.text


def test_per_account_series_only_when_the_operator_enables_them(settings, api, people):
    served = api.get("/metrics", headers=_bearer(METRICS_TOKEN)).text
    assert "reconciliation_divergences_total" in served  # totals are there ...
    assert f'account="{people.owner}"' not in served and "12345.67" not in served  # ... accounts are not
    enabled = _with_api(settings, metrics_token=SecretStr(METRICS_TOKEN), metrics_per_account=True)
    with served_api(enabled) as base_url:
        text = httpx.get(f"{base_url}/metrics", headers=_bearer(METRICS_TOKEN), timeout=10).text
    assert f'account_equity_gbp{{account="{people.owner}"}} 12345.67' in text


@pytest.mark.parametrize(
    "series",
    [
        pytest.param('positions_autoclosed_total{reason="drawdown_guard"} 0.0', id="autoclosed, drawdown guard"),
        pytest.param('positions_autoclosed_total{reason="market_gap"} 0.0', id="autoclosed, market gap"),
        pytest.param('reconciliation_divergences_total{reason="missing"} 0.0', id="divergences, missing"),
        pytest.param('reconciliation_divergences_total{reason="gap"} 0.0', id="divergences, gap"),
        pytest.param('dead_letters_total{consumer="streams"} 0.0', id="dead letters, streams"),
        pytest.param('mt5_position_sync_total{outcome="failed"} 0.0', id="sync failures"),
    ],
)
def test_labelled_counters_are_there_from_start_up_at_zero(settings, series):
    """Issue 11: a fresh API process (nothing has happened) already exposes each known label at 0."""
    import subprocess
    import sys

    program = ("from infra.metrics import exposition; import sys; "
               "sys.stdout.write(exposition()[0].decode())")
    fresh = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True,
                           timeout=120).stdout
    assert series in fresh


# ------------------------------------------------------------------------------------ forged input

def _cursor(moment: str) -> str:
    raw = json.dumps([moment, str(uuid.uuid4())]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("path", ["logs", "snapshots", "alerts"])
@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"cursor": _cursor("0001-01-01T00:00:00+05:00")}, id="cursor year 1 +05:00"),
        pytest.param({"cursor": _cursor("9999-12-31T23:59:59-05:00")}, id="cursor year 9999 -05:00"),
        pytest.param({"cursor": _cursor("0001-01-01T00:00:00+00:00")}, id="cursor year 1 UTC"),
        pytest.param({"since": "0001-01-01T00:00:00+05:00"}, id="since year 1 +05:00"),
        pytest.param({"until": "9999-12-31T23:59:59-05:00"}, id="until year 9999 -05:00"),
        pytest.param({"since": "9999-12-31T23:59:59+00:00"}, id="since year 9999 UTC"),
    ],
)
def test_edge_of_the_calendar_is_a_400_not_a_500(api, people, path, query, caplog):
    with caplog.at_level(logging.INFO):
        response = api.get(f"/users/{people.owner}/{path}", params=query, headers=people.headers("owner"))
    assert response.status_code == 400, response.text
    assert "Traceback" not in caplog.text


# ------------------------------------------------------------------------------ unexpected errors

def test_an_unexpected_error_is_a_short_500_and_one_log_line(settings, caplog):
    app = create_app(settings)

    async def broken() -> None:
        raise ZeroDivisionError("secret-ish detail that must not be logged")

    app.add_api_route("/broken", broken)
    transport = httpx.ASGITransport(app=app)

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get("/broken")

    import asyncio

    with caplog.at_level(logging.DEBUG):
        response = asyncio.run(call())
    assert response.status_code == 500
    body = response.json()
    assert body == {"detail": "internal error", "request_id": response.headers["X-Request-ID"]}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is None and body["request_id"] in errors[0].getMessage()
    assert "ZeroDivisionError" in errors[0].getMessage()
    assert "secret-ish" not in caplog.text and "Traceback" not in caplog.text


# -------------------------------------------------------------------------------------- headers

@pytest.mark.parametrize("path", ["/health", "/me", "/openapi.json", "/docs", "/dashboard", "/nowhere"])
def test_every_response_carries_the_security_headers(api, path):
    response = api.get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_swagger_ui_comes_from_this_server_under_a_strict_policy(api):
    page = api.get("/docs")
    assert page.status_code == 200
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "http" not in policy and "unsafe-eval" not in policy
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/docs/") for s in sources), sources
    assert "<script>" not in page.text  # no inline script: the policy would block it
    for source in sources:
        asset = api.get(source)
        assert asset.status_code == 200 and len(asset.content) > 0, source
    assert "SwaggerUIBundle" in api.get("/docs/swagger-ui-bundle.js").text
    assert api.get("/docs/../../etc/passwd").status_code == 404
