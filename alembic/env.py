"""Alembic environment: async engine on asyncpg, URL from the caller or DATABASE_URL."""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from infra.dburl import sqlalchemy_url
from infra.partitions import is_partition_name
from infra.tables import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("set DATABASE_URL (or use `reconguard migrate`, which starts the embedded server)")
    return sqlalchemy_url(url)


def _not_an_archive_partition(name: str | None, type_: str, parent_names: object) -> bool:
    """Time partitions (the archive's months, the snapshots' days) are made at run time, not by revisions."""
    return not (type_ == "table" and name is not None and is_partition_name(name))


def _compare_default(context: object, inspected: object, metadata: object, inspected_default: str | None,
                     metadata_default: object, rendered_metadata_default: str | None) -> bool | None:
    """Alembic compares defaults by evaluating both: a ``nextval`` would differ every time."""
    if inspected_default is not None and "nextval(" in inspected_default:
        return inspected_default.replace("::regclass", "") != (rendered_metadata_default or "").strip("'\"").replace(
            "::regclass", "")
    return None  # Alembic's own comparison


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True,
                      compare_server_default=_compare_default, include_name=_not_an_archive_partition)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    # A schema other than public (replay into a fresh schema) is selected by search_path, so the
    # models and migrations stay schema-agnostic.
    schema = config.attributes.get("schema")
    connect_args = {"server_settings": {"search_path": schema}} if schema else {}
    engine = create_async_engine(_url(), poolclass=pool.NullPool, connect_args=connect_args)
    async with engine.connect() as connection:
        if schema:
            await connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await connection.commit()
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
