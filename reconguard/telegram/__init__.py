"""Telegram: guard alerts and close results to each owner's chat, and /status (aiogram)."""
