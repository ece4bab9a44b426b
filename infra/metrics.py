"""Every Prometheus metric, declared once; services import what they update.

Labels stay bounded: reasons, services, topics and account ids of the configured accounts at
most (never tickets or event ids).
"""

from __future__ import annotations

import os

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


def exposition() -> tuple[bytes, str]:
    """Every metric of this process — and, under `reconguard run`, of every process of the run."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
