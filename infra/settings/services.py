"""The services' sections: the streams worker, the MT5 terminals, the REST API and Telegram."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    """How the Faust worker runs (not what it decides)."""

    model_config = SettingsConfigDict(env_prefix="RECONGUARD_WORKER_", extra="ignore", frozen=True)

    batch_size: int = Field(default=500, ge=1, description="Events taken from the stream per batch")
    max_batches_in_flight: int = Field(default=4, ge=1,
                                       description="Batches whose sends may await acknowledgement while the "
                                                   "next is processed (their inputs are acked after)")
    batch_within_seconds: float = Field(default=0.02, gt=0, description="Longest wait to fill a batch")
    sweep_interval_seconds: float = Field(default=0.2, gt=0,
                                          description="How often due deadlines are looked for (a deadline "
                                                      "sooner than that is swept at its time)")
    commit_interval_seconds: float = Field(
        default=0.25, gt=0, description="How often the worker commits the offsets it has acked (Faust's "
        "broker_commit_interval): its lag, read by committed offsets, includes up to this much")
    state_flush_seconds: float = Field(default=5.0, gt=0,
                                       description="Volatile state (last reading, last quote) reaches the "
                                                   "changelog at most this late")
    session_timeout_seconds: float = Field(
        default=3.0, ge=3.0, description="Group session timeout of the worker: a restarted worker waits for its "
        "departed self to expire on tansu, so short keeps a restart inside a liquidation's grace")
    levels_refresh_seconds: float = Field(default=30.0, gt=0, description="Reload per-account levels from users")
    metrics_port: int | None = Field(default=None, ge=0, le=65535,
                                     description="Serve this worker's Prometheus metrics here; None: do not")
    warning_delay_alert_seconds: float = Field(
        default=5.0, gt=0, description="A liquidation warning published this long after its report raises an "
        "operator alert (the owner's notice still runs from the warning)")


class GatewaySettings(BaseSettings):
    """How the production services reach real terminals (``RECONGUARD_MT5_*``).

    - ``gateway=mt5linux``: one terminal per account, each behind an mt5linux RPyC server;
      ``endpoints`` maps logins to them: ``"51000101=10.0.0.5:18812,51000102=10.0.0.6:18812"``.
    - ``gateway=native``: the MetaTrader5 package (Windows); it holds one terminal per process, so the
      process serves the one account whose login is ``login``.
    - ``gateway=simulator``: the mt5linux gateway against `reconguard simulator`, which tells its
      endpoints itself (asked at ``simulator``, its control port) unless ``endpoints`` are given.
    The terminals are expected to be logged in already (their saved credentials); the poller checks
    every read against the account's login, so a terminal logged into the wrong account is reported.
    """

    model_config = SettingsConfigDict(env_prefix="RECONGUARD_MT5_", extra="ignore", frozen=True)

    gateway: Literal["mt5linux", "native", "simulator"] = Field(default="mt5linux",
                                                               description="How terminals are reached")
    endpoints: str = Field(default="", description="login=host:port,... of the mt5linux servers")
    login: int | None = Field(default=None, description="The one login a native gateway serves")
    simulator: str = Field(default="127.0.0.1:18900", pattern=r"^[^:\s]+:\d{1,5}$",
                           description="host:port of `reconguard simulator`'s control port (gateway=simulator)")

    @field_validator("endpoints")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            _endpoint_map(value)
        except ValueError:
            raise ValueError(f"expected login=host:port,... got {value!r}") from None
        return value

    def endpoint_map(self) -> dict[int, tuple[str, int]]:
        return _endpoint_map(self.endpoints)


def _endpoint_map(endpoints: str) -> dict[int, tuple[str, int]]:
    pairs = (item.split("=", 1) for item in endpoints.replace(" ", "").split(",") if item)
    mapping = {}
    for login, address in pairs:
        host, port = address.rsplit(":", 1)
        mapping[int(login)] = (host, int(port))
    return mapping


class ApiSettings(BaseSettings):
    """The REST API, the dashboard and /health."""

    model_config = SettingsConfigDict(env_prefix="RECONGUARD_API_", extra="ignore", frozen=True)

    sync_interval_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="Minimum time between two manual syncs of one account.")
    health_timeout_seconds: float = Field(
        default=2.0, gt=0, le=60, description="How long /health waits for the broker and the database.")
    dashboard_refresh_seconds: int = Field(
        default=5, ge=1, le=300, description="How often the dashboard page fetches fresh data.")
    dashboard_points: int = Field(
        default=300, ge=10, le=5000, description="Most snapshots per account in a dashboard chart.")
    metrics_token: SecretStr | None = Field(
        default=None, min_length=24,
        description="Bearer token Prometheus sends to read /metrics (an admin's API token also may); "
        "unset: only admins' tokens. Never anonymous.")
    metrics_per_account: bool = Field(
        default=False, description="Expose per-account series (equity, drawdown, distance to the critical "
        "level, labelled by user id) on /metrics; off: only totals.")
    token_expiry_days: float = Field(
        default=90, gt=0, le=3650, description="Lifetime of an API token issued without --expires.")


class TelegramSettings(BaseSettings):
    """The Telegram alerts service."""

    model_config = SettingsConfigDict(env_prefix="RECONGUARD_TELEGRAM_", extra="ignore", frozen=True,
                                      populate_by_name=True)

    bot_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TELEGRAM_BOT_TOKEN", "RECONGUARD_TELEGRAM_BOT_TOKEN",
                                                    "bot_token"),
        description="The bot's token from @BotFather; unset means the telegram service idles (and says so).")
    api_base: str = Field(
        default="https://api.telegram.org", pattern=r"^https?://",
        description="Bot API server (a local telegram-bot-api server, or a fake one in tests).")
    request_timeout_seconds: float = Field(default=15.0, gt=0, le=120, description="Timeout of one Bot API request.")
    backoff_initial_seconds: float = Field(
        default=0.5, gt=0, le=60, description="First wait after a 5xx or network error; doubles each time.")
    backoff_max_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="Longest wait between two attempts (alerts are never dropped).")
    retry_after_max_seconds: float = Field(
        default=600.0, gt=0, description="Longest 429 retry_after honoured as given (longer ones are capped).")
    polling_timeout_seconds: int = Field(default=10, ge=0, le=50,
                                         description="Long-polling wait of getUpdates (for /status).")
    status_enabled: bool = Field(default=True, description="Answer /status (long polling getUpdates).")
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve this service's /metrics here when run on its own; "
        "None: do not (the API's /metrics covers it under `reconguard run`).")
    consumer_group: str | None = Field(
        default=None, description="Kafka group of the alerts consumer; default '<topic_prefix>.telegram'.")


class SupervisorSettings(BaseSettings):
    """How `reconguard run` restarts a service that stopped on its own (crashed or exited)."""

    model_config = SettingsConfigDict(env_prefix="RECONGUARD_SUPERVISOR_", extra="ignore", frozen=True)

    backoff_initial_seconds: float = Field(default=0.5, gt=0, le=60,
                                           description="Wait before the first restart; doubles per crash")
    backoff_max_seconds: float = Field(default=30.0, gt=0, le=3600, description="Longest wait between restarts")
    stable_after_seconds: float = Field(default=30.0, gt=0,
                                        description="A service up this long is stable: its backoff starts again")
    crash_loop_restarts: int = Field(default=5, ge=2,
                                     description="This many crashes within the window is a crash loop: "
                                                 "health degrades and an operator alert is published")
    crash_loop_window_seconds: float = Field(default=120.0, gt=0, description="The crash loop's window")
    watch_interval_seconds: float = Field(default=0.5, gt=0,
                                          description="How often the embedded servers are checked (and revived)")
