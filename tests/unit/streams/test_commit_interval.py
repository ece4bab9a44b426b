"""The worker commits its offsets at the configured interval (its lag by committed offsets includes it)."""

from __future__ import annotations

from infra.settings import Settings
from streams.app import create_app


def test_the_worker_commits_every_quarter_second_by_default() -> None:
    app = create_app(Settings(kafka_bootstrap_servers="127.0.0.1:1", database_url=None), name="commit-check")
    assert app.conf.broker_commit_interval == 0.25


def test_the_commit_interval_is_a_setting(monkeypatch) -> None:
    monkeypatch.setenv("RECONGUARD_WORKER_COMMIT_INTERVAL_SECONDS", "0.5")
    app = create_app(Settings(kafka_bootstrap_servers="127.0.0.1:1", database_url=None), name="commit-check-2")
    assert app.conf.broker_commit_interval == 0.5
