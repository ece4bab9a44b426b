"""SQLAlchemy 2 models of the schema Alembic owns (``alembic check`` keeps the two equal).

Identities: ``users`` holds each person the project knows; a trader owns one MT5 account, whose
key on every topic is the user id. The three projections have exactly the SPEC's columns; each
row's ``id`` is the id of the event it was made from, so a redelivered event is refused by the
primary key. ``projection_progress`` is how far each consumer has read, written in the same
transaction as the rows.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from infra.partitions import ARCHIVE

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Money = Numeric(18, 4)
Percent = Numeric(12, 4)
PriceT = Numeric(20, 8)
Lots = Numeric(18, 4)
Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Mapped[datetime]:
    return mapped_column(Timestamp, nullable=False, server_default=func.now())


def _zero(type_: Numeric | Integer) -> Mapped[Decimal]:
    return mapped_column(type_, nullable=False, server_default=text("0"))


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('trader', 'admin')", name="role"),
        CheckConstraint("critical_drawdown_percent > warning_drawdown_percent", name="levels_ordered"),
        UniqueConstraint("mt5_login", "mt5_server"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(128), nullable=False, server_default="")
    role: Mapped[str] = mapped_column(String(16), nullable=False, server_default="trader")
    mt5_login: Mapped[int | None] = mapped_column(BigInteger)
    mt5_server: Mapped[str | None] = mapped_column(String(128))
    account_currency: Mapped[str | None] = mapped_column(String(3))
    telegram_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    warning_drawdown_percent: Mapped[Decimal] = mapped_column(Percent, nullable=False, server_default=text("5"))
    critical_drawdown_percent: Mapped[Decimal] = mapped_column(Percent, nullable=False, server_default=text("10"))
    daily_loss_limit_percent: Mapped[Decimal] = mapped_column(Percent, nullable=False, server_default=text("5"))
    close_grace_seconds: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("10"))
    guard_profile: Mapped[str] = mapped_column(String(64), nullable=False, server_default="default")
    initial_balance_gbp: Mapped[Decimal | None] = mapped_column(Money)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class ReconciliationLog(Base):
    """``matched``: 0 divergence, 1 matched, 2 indeterminate (the terminal could not be read)."""

    __tablename__ = "reconciliation_logs"
    __table_args__ = (
        CheckConstraint("matched IN (0, 1, 2)", name="matched"),
        CheckConstraint("status IN ('matched', 'divergence', 'success', 'failed')", name="status"),
        Index(None, "user_id", "created_at"),
        Index(None, "symbol", "created_at"),
        Index(None, "event_type"),
        Index(None, "status"),
        Index(None, "signal_id"),
        Index(None, "approval_id"),
        Index(None, "mt5_position_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False)
    signal_id: Mapped[str | None] = mapped_column(String(64))
    approval_id: Mapped[str | None] = mapped_column(String(64))
    mt5_position_id: Mapped[int | None] = mapped_column(BigInteger)
    symbol: Mapped[str | None] = mapped_column(String(32))
    direction: Mapped[str | None] = mapped_column(String(4))
    volume: Mapped[Decimal] = _zero(Lots)
    entry_price: Mapped[Decimal | None] = mapped_column(PriceT)
    current_price: Mapped[Decimal | None] = mapped_column(PriceT)
    take_profit: Mapped[Decimal | None] = mapped_column(PriceT)
    stop_loss: Mapped[Decimal | None] = mapped_column(PriceT)
    matched: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default=text("0"))
    divergence_reason: Mapped[str | None] = mapped_column(String(32))
    close_reason: Mapped[str | None] = mapped_column(String(32))
    closed_price: Mapped[Decimal | None] = mapped_column(PriceT)
    pnl_gbp: Mapped[Decimal] = _zero(Money)
    pnl_percent: Mapped[Decimal] = _zero(Percent)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class PositionSnapshot(Base):
    __tablename__ = "position_snapshots"
    __table_args__ = (
        Index(None, "user_id", "created_at"),
        # "Latest snapshot per user": a backward scan of this index finds it without a sort.
        Index("ix_position_snapshots_latest_per_user", "user_id", text("created_at DESC"), "id"),
        # Daily partitions (infra/partitions.py), made as days arrive and dropped after the retention.
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False)
    equity_gbp: Mapped[Decimal] = _zero(Money)
    balance_gbp: Mapped[Decimal] = _zero(Money)
    peak_equity_gbp: Mapped[Decimal] = _zero(Money)
    drawdown_percent: Mapped[Decimal] = _zero(Percent)
    open_positions_count: Mapped[int] = _zero(Integer)  # type: ignore[assignment]
    total_volume_lots: Mapped[Decimal] = _zero(Lots)
    open_pnl_gbp: Mapped[Decimal] = _zero(Money)
    margin_used_percent: Mapped[Decimal] = _zero(Percent)
    last_sync_at: Mapped[datetime | None] = mapped_column(Timestamp)
    sync_error: Mapped[str | None] = mapped_column(Text)
    # In the primary key: a partitioned table's unique keys must hold its partition key.
    created_at: Mapped[datetime] = mapped_column(Timestamp, primary_key=True, server_default=func.now())


class DrawdownAlert(Base):
    __tablename__ = "drawdown_alerts"
    __table_args__ = (
        CheckConstraint("action_taken IN ('warning_sent', 'positions_closed', 'failed')", name="action_taken"),
        Index(None, "user_id", "created_at"),
        Index(None, "alert_type"),
        Index(None, "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False)
    alert_type: Mapped[str] = mapped_column(String(32), nullable=False)
    drawdown_percent: Mapped[Decimal] = _zero(Percent)
    equity_gbp: Mapped[Decimal] = _zero(Money)
    threshold_percent: Mapped[Decimal] = _zero(Percent)
    positions_closed_count: Mapped[int] = _zero(Integer)  # type: ignore[assignment]
    total_loss_gbp: Mapped[Decimal] = _zero(Money)
    action_taken: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = _now()
    executed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # One row per alert through its states (0004): the highest revision wins, at updated_at.
    revision: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    updated_at: Mapped[datetime] = _now()


class AccountLockEvent(Base):
    """Each account lock and unlock (``account-locks``): an account is locked while its latest
    ``AccountLocked`` has no ``AccountUnlocked`` naming it (``lock_id``)."""

    __tablename__ = "account_lock_events"
    __table_args__ = (
        CheckConstraint("event_type IN ('AccountLocked', 'AccountUnlocked')", name="event_type"),
        Index(None, "user_id", "created_at"),
        Index(None, "lock_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False)
    event_type: Mapped[str] = mapped_column(String(32), nullable=False)
    lock_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    ends: Mapped[str | None] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()


class ProjectionProgress(Base):
    """The next offset each consumer will read, per partition, committed with the rows it covers."""

    __tablename__ = "projection_progress"

    consumer: Mapped[str] = mapped_column(String(128), primary_key=True)
    topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[datetime] = _now()


# --- Operational tables (not projections): what services must remember across restarts. ---


class CloseExecution(Base):
    """The close executor's ledger: one row per command and ticket, written before ``order_send``.

    A row in ``sending`` after a crash means "the outcome is unknown": the executor re-reads the
    position and its deals instead of sending again.
    """

    __tablename__ = "close_executions"
    __table_args__ = (
        CheckConstraint("status IN ('sending', 'closed', 'failed', 'not_found')", name="status"),
        Index(None, "user_id", "symbol", "created_at"),
    )

    command_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    ticket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False)
    symbol: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    retcode: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    result: Mapped[dict | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class ApiToken(Base):
    """Bearer tokens, stored as SHA-256 hashes: the token itself is shown once and never kept."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False, server_default="")
    created_at: Mapped[datetime] = _now()
    last_used_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    #: After this the API refuses the token (401); NULL only for tokens issued before expiry existed.
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp)


class TelegramDelivery(Base):
    """Which events have reached Telegram, so a restart never sends one twice."""

    __tablename__ = "telegram_deliveries"

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    delivered_at: Mapped[datetime] = _now()


class ArchivedEvent(Base):
    """The event archive: every event of every topic, as published (``value`` is the exact bytes).

    Append-only (a trigger refuses UPDATE and DELETE), idempotent by (occurred_at, event_id),
    partitioned by month of ``occurred_at``; the archiver creates each month's partition
    (``event_archive_yYYYYmMM``) as it arrives. ``topic``/``partition``/``offset`` say where the event
    was first archived from, the order it is restored in.
    """

    __tablename__ = "event_archive"
    __table_args__ = (
        Index("ix_event_archive_topic_partition_seq", "topic", "partition", "seq"),
        Index("ix_event_archive_account_id_occurred_at", "account_id", "occurred_at"),
        {"postgresql_partition_by": "RANGE (occurred_at)"},
    )

    occurred_at: Mapped[datetime] = mapped_column(Timestamp, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    topic: Mapped[str] = mapped_column(String(249), nullable=False)
    partition: Mapped[int] = mapped_column(Integer, nullable=False)
    offset: Mapped[int] = mapped_column(BigInteger, nullable=False)
    event_type: Mapped[str] = mapped_column(String(128), nullable=False)
    account_id: Mapped[str] = mapped_column(String(64), nullable=False)
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False,
                                     server_default=text("nextval('event_archive_seq'::regclass)"))
    archived_at: Mapped[datetime] = _now()


#: Monthly partitions of ``event_archive`` are made at run time, not by Alembic.
ARCHIVE_PARTITION_PREFIX = ARCHIVE.prefix
