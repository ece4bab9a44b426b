"""Account locks: each lock after a liquidation and each unlock, projected from ``account-locks``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('account_lock_events',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=32), nullable=False),
    sa.Column('lock_id', sa.UUID(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('ends', sa.String(length=32), nullable=True),
    sa.Column('actor', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("event_type IN ('AccountLocked', 'AccountUnlocked')",
                       name=op.f('ck_account_lock_events_event_type')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_account_lock_events_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_account_lock_events'))
    )
    op.create_index(op.f('ix_account_lock_events_lock_id'), 'account_lock_events', ['lock_id'], unique=False)
    op.create_index(op.f('ix_account_lock_events_user_id_created_at'), 'account_lock_events',
                    ['user_id', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_account_lock_events_user_id_created_at'), table_name='account_lock_events')
    op.drop_index(op.f('ix_account_lock_events_lock_id'), table_name='account_lock_events')
    op.drop_table('account_lock_events')
