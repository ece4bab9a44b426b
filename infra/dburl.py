"""One place that turns the user's plain PostgreSQL URL into what each driver wants."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def plain_url(url: str) -> str:
    """``postgresql://…`` for asyncpg and psql, whatever driver suffix the input carried."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql"))


def sqlalchemy_url(url: str) -> str:
    """``postgresql+asyncpg://…`` for SQLAlchemy's async engine and Alembic."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg"))


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
