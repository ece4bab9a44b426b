"""The Telegram service's metrics, until the lead moves them into `reconguard.metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
