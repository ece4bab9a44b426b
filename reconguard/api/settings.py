"""Settings of the REST API, the dashboard and /health (read from RECONGUARD_* like the rest).

Kept apart from `reconguard.settings.Settings` (owned by the foundation) until the lead merges
them; `docs/configuration.md` should list these too.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECONGUARD_", extra="ignore", frozen=True)

    api_sync_interval_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="Minimum time between two manual syncs of one account."
    )
    api_health_timeout_seconds: float = Field(
        default=2.0, gt=0, le=60, description="How long /health waits for the broker and the database."
    )
    api_dashboard_refresh_seconds: int = Field(
        default=5, ge=1, le=300, description="How often the dashboard page fetches fresh data."
    )
    api_dashboard_points: int = Field(
        default=300, ge=10, le=5000, description="Most snapshots per account in a dashboard chart."
    )
