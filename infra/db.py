"""The database: engines, and Alembic as the one owner of the schema."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from alembic import command
from infra.dburl import sqlalchemy_url

REPO_ROOT = Path(__file__).resolve().parents[1]


def alembic_config(database_url: str, *, schema: str | None = None) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    config.attributes["database_url"] = database_url
    config.attributes["schema"] = schema
    config.attributes["configure_logging"] = False
    return config


def migrate(database_url: str, revision: str = "head", *, schema: str | None = None) -> None:
    """``alembic upgrade`` (blocking: call it from a thread inside an event loop)."""
    command.upgrade(alembic_config(database_url, schema=schema), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def make_engine(database_url: str, **options: object) -> AsyncEngine:
    return create_async_engine(sqlalchemy_url(database_url), pool_pre_ping=True, **options)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)
