"""position_snapshots partitioned by day of created_at, so retention drops whole days.

One row per account per poll is the fastest-growing table (86,400 rows per account per day at
1 Hz): a day's partition is dropped whole when it passes ``snapshot_retention_days``
(infra/partitions.py, run by the projector). The primary key becomes (id, created_at), because
a partitioned table's unique keys must hold its partition key; both come from the event
(event id, occurred_at), so a redelivery is still refused. Existing rows move into partitions
made for their days; partitions for new days are made by the projector as days arrive.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from infra.partitions import SNAPSHOTS

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = """
    id uuid NOT NULL,
    user_id varchar(64) NOT NULL,
    equity_gbp numeric(18, 4) NOT NULL DEFAULT 0,
    balance_gbp numeric(18, 4) NOT NULL DEFAULT 0,
    peak_equity_gbp numeric(18, 4) NOT NULL DEFAULT 0,
    drawdown_percent numeric(12, 4) NOT NULL DEFAULT 0,
    open_positions_count integer NOT NULL DEFAULT 0,
    total_volume_lots numeric(18, 4) NOT NULL DEFAULT 0,
    open_pnl_gbp numeric(18, 4) NOT NULL DEFAULT 0,
    margin_used_percent numeric(12, 4) NOT NULL DEFAULT 0,
    last_sync_at timestamptz,
    sync_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT fk_position_snapshots_user_id_users FOREIGN KEY (user_id) REFERENCES users (id)"""
_INDEXES = (
    "CREATE INDEX ix_position_snapshots_latest_per_user ON position_snapshots (user_id, created_at DESC, id)",
    "CREATE INDEX ix_position_snapshots_user_id_created_at ON position_snapshots (user_id, created_at)",
)


def _set_aside_old_table() -> None:
    op.execute("ALTER TABLE position_snapshots RENAME TO position_snapshots_old")
    op.execute("ALTER TABLE position_snapshots_old DROP CONSTRAINT fk_position_snapshots_user_id_users")
    op.execute("ALTER TABLE position_snapshots_old DROP CONSTRAINT pk_position_snapshots")
    op.execute("DROP INDEX ix_position_snapshots_latest_per_user")
    op.execute("DROP INDEX ix_position_snapshots_user_id_created_at")


def upgrade() -> None:
    _set_aside_old_table()
    op.execute(f"CREATE TABLE position_snapshots ({_COLUMNS},\n"
               "    CONSTRAINT pk_position_snapshots PRIMARY KEY (id, created_at)\n"
               ") PARTITION BY RANGE (created_at)")
    for statement in _INDEXES:
        op.execute(statement)
    days = op.get_bind().execute(sa.text(
        "SELECT DISTINCT date_trunc('day', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day "
        "FROM position_snapshots_old")).scalars().all()
    for day in days:
        op.execute(SNAPSHOTS.create_sql(day))
    op.execute("INSERT INTO position_snapshots SELECT * FROM position_snapshots_old")
    op.execute("DROP TABLE position_snapshots_old")


def downgrade() -> None:
    _set_aside_old_table()
    op.execute(f"CREATE TABLE position_snapshots ({_COLUMNS},\n"
               "    CONSTRAINT pk_position_snapshots PRIMARY KEY (id)\n)")
    for statement in _INDEXES:
        op.execute(statement)
    op.execute("INSERT INTO position_snapshots SELECT * FROM position_snapshots_old")
    op.execute("DROP TABLE position_snapshots_old")  # its partitions go with it
