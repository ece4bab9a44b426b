"""/metrics: Prometheus text that promtool accepts, with the metrics of every service in the process."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest
from pydantic import SecretStr

from infra import metrics
from infra import metrics as telegram_metrics
from tests.integration.interfaces.support import served_api

pytestmark = pytest.mark.integration

PROMTOOL = shutil.which("promtool")
#: The SPEC names this gauge; promtool's naming lint prefers `_total` for counters only. It is the
#: one finding accepted: anything else (a parse error, another lint finding) fails the test.
SPEC_MANDATED = {'mt5_positions_total non-counter metrics should not have "_total" suffix'}


@pytest.fixture(scope="module")
def exposition(settings) -> str:
    # Give labelled metrics a child each, as a running pipeline would, so their samples appear.
    metrics.reconciliation_divergences_total.labels(reason="missing").inc(0)
    metrics.account_equity_gbp.labels(account="demo-1").set(10_000)
    metrics.mt5_positions_total.labels(account="demo-1").set(2)
    metrics.reconciliation_latency_seconds.observe(0.02)
    telegram_metrics.telegram_messages_total.labels(outcome="sent").inc(0)
    token = "prometheus-" + "p" * 32
    api = settings.api.model_copy(update={"metrics_token": SecretStr(token), "metrics_per_account": True})
    with served_api(settings.model_copy(update={"api": api})) as base_url:
        httpx.get(f"{base_url}/me", timeout=10)  # one counted request
        response = httpx.get(f"{base_url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("account_equity_gbp", id="a SPEC gauge"),
        pytest.param("reconciliation_divergences_total", id="a SPEC counter"),
        pytest.param("reconciliation_latency_seconds_bucket", id="the SPEC histogram"),
        pytest.param("api_requests_total", id="the API's own counter"),
        pytest.param("telegram_messages_total", id="another service's counter, same process"),
    ],
)
def test_the_exposition_carries(exposition, name):
    assert f"\n{name}" in exposition


def test_route_labels_are_templates_not_paths(exposition):
    assert 'api_requests_total{route="/me",status="401"}' in exposition


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package `prometheus`)")
def test_promtool_accepts_the_metrics(exposition):
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = {line for line in (done.stdout + done.stderr).splitlines() if line.strip()}
    assert done.returncode in (0, 3), done.stdout + done.stderr  # 3: lint findings only, the text parsed
    assert findings <= SPEC_MANDATED, findings - SPEC_MANDATED
