"""The Telegram service's metrics (declared in `reconguard.metrics`, like every metric)."""

from reconguard.metrics import telegram_delivery_latency_seconds, telegram_messages_total, telegram_send_retries_total

__all__ = ["telegram_delivery_latency_seconds", "telegram_messages_total", "telegram_send_retries_total"]
