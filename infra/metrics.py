"""Every Prometheus metric, declared once; services import what they update.

Labels stay bounded: reasons, services, topics and account ids of the configured accounts at
most (never tickets or event ids). Every labelled counter starts with each known label value at
0 (``KNOWN_LABELS``), so `rate()` and dashboards see a fresh deployment's series at once.

Who reads them: the exposition (``exposition``) leaves out every per-account series (label
``account``: equity, drawdown, distance to the critical level) unless the operator enables them
(``RECONGUARD_API_METRICS_PER_ACCOUNT``), and the API serves it only to a scraper holding the
metrics token or an admin's token (`reconguard.api.routes_ops`).
"""

from __future__ import annotations

import os
import secrets
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from schemas.common import CloseReason
from schemas.deadletters import DEAD_LETTER_CONSUMERS
from schemas.decisions import DivergenceReason

#: Set by `reconguard run` before anything imports prometheus_client, so that the Faust worker
#: (a child process) and the services in the main process write to one shared directory.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

mt5_position_sync_total = Counter(
    "mt5_position_sync_total", "Polls of an MT5 account, by outcome.", ["outcome"])
reconciliation_divergences_total = Counter(
    "reconciliation_divergences_total", "Divergences detected, by reason.", ["reason"])
drawdown_guard_triggers_total = Counter(
    "drawdown_guard_triggers_total", "Critical drawdown or daily-loss breaches that started a liquidation.")
guard_untrusted_readings_total = Counter(
    "guard_untrusted_readings_total", "Account readings the drawdown guard did not trust, by reason.", ["reason"])
positions_autoclosed_total = Counter(
    "positions_autoclosed_total", "Positions closed by the guards, by reason.", ["reason"])
# Gauges say which value wins when several processes report one (only under multiprocess mode).
mt5_positions_total = Gauge("mt5_positions_total", "Open positions seen at the last poll.", ["account"],
                            multiprocess_mode="mostrecent")
account_equity_gbp = Gauge("account_equity_gbp", "Equity in GBP at the last report.", ["account"],
                           multiprocess_mode="mostrecent")
account_drawdown_percent = Gauge(
    "account_drawdown_percent", "Drawdown from the high-water mark, percent.", ["account"],
    multiprocess_mode="mostrecent")
divergence_age_seconds = Histogram(
    "divergence_age_seconds", "How long divergences stayed open, observed when they resolve, by reason.",
    ["reason"], buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 14400, 86400))
account_critical_distance_percent = Gauge(
    "account_critical_distance_percent",
    "Drawdown percentage points left before the account's critical level (0 or less: breached).", ["account"],
    multiprocess_mode="mostrecent")
reconciliation_latency_seconds = Histogram(
    "reconciliation_latency_seconds", "From a position report's poll to its reconciliation outcome.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

mt5_poller_last_round_timestamp_seconds = Gauge(
    "mt5_poller_last_round_timestamp_seconds", "When the poller last finished a round (liveness: alert when old).",
    multiprocess_mode="mostrecent")
mt5_last_sync_timestamp_seconds = Gauge(
    "mt5_last_sync_timestamp_seconds", "When each account was last read successfully.", ["account"],
    multiprocess_mode="mostrecent")
consumer_lag_messages = Gauge(
    "consumer_lag_messages", "Messages behind the end of the topic, summed over partitions, per consumer.",
    ["consumer", "topic"], multiprocess_mode="mostrecent")

projection_events_total = Counter(
    "projection_events_total", "Events written to Postgres by the projector, by table.", ["table"])
dead_letters_total = Counter(
    "dead_letters_total", "Messages sent to the dead-letter topic, by consumer.", ["consumer"])


# API (bounded labels: `route` is the route template, never a path with ids in it).
api_requests_total = Counter(
    "api_requests_total",
    "HTTP requests answered by the API, by route template and status code.",
    ["route", "status"],
)
api_request_duration_seconds = Histogram(
    "api_request_duration_seconds",
    "Time to answer an API request, by route template.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
api_sync_requests_total = Counter(
    "api_sync_requests_total",
    "Manual sync requests, by outcome (accepted, rate_limited, failed).",
    ["outcome"],
)

# Telegram alerts.
telegram_messages_total = Counter(
    "telegram_messages_total",
    "Alert and close messages handled, by outcome (sent, duplicate, no_chat, failed_permanent, dead_letter).",
    ["outcome"],
)
telegram_send_retries_total = Counter(
    "telegram_send_retries_total",
    "Bot API attempts that will be retried, by reason (retry_after, server_error, network, unauthorized).",
    ["reason"],
)
telegram_delivery_latency_seconds = Histogram(
    "telegram_delivery_latency_seconds",
    "From the event's time to its message reaching Telegram.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
service_restarts_total = Counter(
    "service_restarts_total", "Restarts of a supervised service after it crashed or exited, by service.", ["service"])
service_up = Gauge("service_up", "1 while a supervised service runs, 0 while it waits to restart.", ["service"],
                   multiprocess_mode="mostrecent")
service_crash_loop = Gauge("service_crash_loop", "1 while a supervised service is in a crash loop.", ["service"],
                           multiprocess_mode="mostrecent")
embedded_server_restarts_total = Counter(
    "embedded_server_restarts_total", "Embedded servers (postgres, tansu) started again after they died.", ["server"])
warning_publish_delay_seconds = Histogram(
    "warning_publish_delay_seconds", "From a critical breach's report to its warning's publication.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))


#: The label values each labelled counter (and the divergence-age histogram) is known to take.
#: ``api_requests_total`` is left out: its routes and status codes are not a closed set.
KNOWN_LABELS: dict[MetricWrapperBase, dict[str, tuple[str, ...]]] = {
    mt5_position_sync_total: {"outcome": ("ok", "failed")},
    reconciliation_divergences_total: {"reason": tuple(r.value for r in DivergenceReason)},
    divergence_age_seconds: {"reason": tuple(r.value for r in DivergenceReason)},
    positions_autoclosed_total: {"reason": tuple(r.value for r in CloseReason)},
    projection_events_total: {"table": ("reconciliation_logs", "position_snapshots", "drawdown_alerts")},
    dead_letters_total: {"consumer": DEAD_LETTER_CONSUMERS},
    api_sync_requests_total: {"outcome": ("accepted", "rate_limited", "failed")},
    telegram_messages_total: {"outcome": ("sent", "duplicate", "no_chat", "failed_permanent", "dead_letter")},
    telegram_send_retries_total: {"reason": ("retry_after", "server_error", "network", "unauthorized")},
}


def _start_at_zero() -> None:
    for metric, labels in KNOWN_LABELS.items():
        ((name, values),) = labels.items()
        for value in values:
            metric.labels(**{name: value})


_start_at_zero()

#: The label that makes a series one account's.
ACCOUNT_LABEL = "account"


def _without_accounts(families: Iterator[Metric]) -> Iterator[Metric]:
    for family in families:
        samples = [s for s in family.samples if ACCOUNT_LABEL not in s.labels]
        if samples or not family.samples:
            copy = Metric(family.name, family.documentation, family.type, family.unit)
            copy.samples = samples
            yield copy


class _View:
    """A collector over another registry's metrics, per-account series left out unless wanted."""

    def __init__(self, source: CollectorRegistry, *, per_account: bool) -> None:
        self.source, self.per_account = source, per_account

    def collect(self) -> Iterator[Metric]:
        families = self.source.collect()
        return families if self.per_account else _without_accounts(families)


def exposition(*, per_account: bool = False) -> tuple[bytes, str]:
    """Every metric of this process — and, under `reconguard run`, of every process of the run;
    one account's series only when ``per_account``."""
    source = REGISTRY
    if os.environ.get(MULTIPROCESS_ENV):
        source = CollectorRegistry()
        multiprocess.MultiProcessCollector(source)
    view = CollectorRegistry(auto_describe=False)
    view.register(_View(source, per_account=per_account))  # type: ignore[arg-type] - a collector by shape
    return generate_latest(view), CONTENT_TYPE_LATEST


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every 15 s is not news


def serve_metrics(*, host: str, port: int, token: str | None, per_account: bool) -> WSGIServer:
    """A service's own /metrics listener (when run apart from the API), in a daemon thread.

    It answers only a bearer of ``token`` (the metrics token), so it refuses to start without one;
    per-account series only when ``per_account``. ``shutdown()`` the result to stop it."""
    if not token:
        raise ValueError("a metrics port needs RECONGUARD_API_METRICS_TOKEN: /metrics is never anonymous")
    expected = f"Bearer {token}".encode()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "").encode()
        if not secrets.compare_digest(given, expected):
            start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer"), ("Content-Type", "text/plain")])
            return [b"send the metrics token: Authorization: Bearer <token>\n"]
        body, content_type = exposition(per_account=per_account)
        start_response("200 OK", [("Content-Type", content_type), ("X-Content-Type-Options", "nosniff")])
        return [body]

    server = make_server(host, port, app, server_class=_Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
