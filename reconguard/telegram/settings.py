"""Settings of the Telegram alerts service (read from RECONGUARD_* like the rest).

Kept apart from `reconguard.settings.Settings` (owned by the foundation) until the lead merges them.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class TelegramSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECONGUARD_", extra="ignore", frozen=True)

    telegram_bot_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TELEGRAM_BOT_TOKEN", "RECONGUARD_TELEGRAM_BOT_TOKEN"),
        description="The bot's token from @BotFather; unset means the telegram service idles (and says so).",
    )
    telegram_api_base: str = Field(
        default="https://api.telegram.org",
        pattern=r"^https?://",
        description="Bot API server (a local telegram-bot-api server, or a fake one in tests).",
    )
    telegram_request_timeout_seconds: float = Field(
        default=15.0, gt=0, le=120, description="Timeout of one Bot API request."
    )
    telegram_backoff_initial_seconds: float = Field(
        default=0.5, gt=0, le=60, description="First wait after a 5xx or network error; doubles each time."
    )
    telegram_backoff_max_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Longest wait between two attempts (alerts are never dropped).",
    )
    telegram_retry_after_max_seconds: float = Field(
        default=600.0, gt=0, description="Longest 429 retry_after honoured as given (longer ones are capped)."
    )
    telegram_polling_timeout_seconds: int = Field(
        default=10, ge=0, le=50, description="Long-polling wait of getUpdates (for /status)."
    )
    telegram_status_enabled: bool = Field(
        default=True, description="Answer /status (long polling getUpdates)."
    )
    telegram_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve this service's /metrics here when run on its own; None: do not "
        "(the API's /metrics covers it under `reconguard run`).",
    )
    telegram_consumer_group: str | None = Field(
        default=None, description="Kafka group of the alerts consumer; default '<topic_prefix>.telegram'."
    )
