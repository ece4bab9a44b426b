"""A service's own /metrics listener (worker, Telegram, when run apart): only the metrics token
reads it, it will not start without one, and it shows no account unless the operator says so."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from infra import metrics
from infra.embedded import free_port

TOKEN = "t" * 32


def _get(port: int, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def served(request):
    servers = []

    def serve(**options):
        port = free_port()
        servers.append(metrics.serve_metrics(host="127.0.0.1", port=port, token=TOKEN, **options))
        return port

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_it_refuses_to_start_without_a_token():
    with pytest.raises(ValueError, match="RECONGUARD_API_METRICS_TOKEN"):
        metrics.serve_metrics(host="127.0.0.1", port=free_port(), token=None, per_account=False)


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("wrong" * 8, 401), (TOKEN, 200)],
                         ids=["anonymous", "a wrong token", "the metrics token"])
def test_only_the_metrics_token_reads_it(served, token, status):
    metrics.account_equity_gbp.labels(account="u-listener").set(4321.5)
    got, body = _get(served(per_account=False), token)
    assert got == status
    assert "u-listener" not in body


def test_per_account_series_only_when_enabled(served):
    metrics.account_equity_gbp.labels(account="u-listener").set(4321.5)
    _, hidden = _get(served(per_account=False), TOKEN)
    _, shown = _get(served(per_account=True), TOKEN)
    assert 'account="u-listener"' not in hidden and "positions_autoclosed_total" in hidden
    assert 'account_equity_gbp{account="u-listener"} 4321.5' in shown
