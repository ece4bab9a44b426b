"""Telegram: guard alerts and close results to each owner's chat, and /status (aiogram)."""

from reconguard.telegram.service import serve

__all__ = ["serve"]
