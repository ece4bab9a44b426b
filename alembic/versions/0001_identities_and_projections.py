"""Identities (users with their MT5 account and guard levels) and the three projections.

Each projection row's id is the id of its event; projection_progress records how far each
consumer has read, in the same transaction as the rows.

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('projection_progress',
    sa.Column('consumer', sa.String(length=128), nullable=False),
    sa.Column('topic', sa.String(length=249), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=False),
    sa.Column('next_offset', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('consumer', 'topic', 'partition', name=op.f('pk_projection_progress'))
    )
    op.create_table('users',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=128), server_default='', nullable=False),
    sa.Column('role', sa.String(length=16), server_default='trader', nullable=False),
    sa.Column('mt5_login', sa.BigInteger(), nullable=True),
    sa.Column('mt5_server', sa.String(length=128), nullable=True),
    sa.Column('account_currency', sa.String(length=3), nullable=True),
    sa.Column('telegram_chat_id', sa.BigInteger(), nullable=True),
    sa.Column('warning_drawdown_percent', sa.Numeric(precision=12, scale=4), server_default=sa.text('5'), nullable=False),
    sa.Column('critical_drawdown_percent', sa.Numeric(precision=12, scale=4), server_default=sa.text('10'), nullable=False),
    sa.Column('daily_loss_limit_percent', sa.Numeric(precision=12, scale=4), server_default=sa.text('5'), nullable=False),
    sa.Column('close_grace_seconds', sa.Integer(), server_default=sa.text('10'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("role IN ('trader', 'admin')", name=op.f('ck_users_role')),
    sa.CheckConstraint('critical_drawdown_percent > warning_drawdown_percent', name=op.f('ck_users_levels_ordered')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('mt5_login', 'mt5_server', name=op.f('uq_users_mt5_login_mt5_server'))
    )
    op.create_table('drawdown_alerts',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('alert_type', sa.String(length=32), nullable=False),
    sa.Column('drawdown_percent', sa.Numeric(precision=12, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('equity_gbp', sa.Numeric(precision=18, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('threshold_percent', sa.Numeric(precision=12, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('positions_closed_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('total_loss_gbp', sa.Numeric(precision=18, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('action_taken', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('executed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("action_taken IN ('warning_sent', 'positions_closed', 'failed')", name=op.f('ck_drawdown_alerts_action_taken')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_drawdown_alerts_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drawdown_alerts'))
    )
    op.create_index(op.f('ix_drawdown_alerts_alert_type'), 'drawdown_alerts', ['alert_type'], unique=False)
    op.create_index(op.f('ix_drawdown_alerts_status'), 'drawdown_alerts', ['status'], unique=False)
    op.create_index(op.f('ix_drawdown_alerts_user_id_created_at'), 'drawdown_alerts', ['user_id', 'created_at'], unique=False)
    op.create_table('position_snapshots',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('equity_gbp', sa.Numeric(precision=18, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('balance_gbp', sa.Numeric(precision=18, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('peak_equity_gbp', sa.Numeric(precision=18, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('drawdown_percent', sa.Numeric(precision=12, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('open_positions_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('total_volume_lots', sa.Numeric(precision=18, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('open_pnl_gbp', sa.Numeric(precision=18, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('margin_used_percent', sa.Numeric(precision=12, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('last_sync_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sync_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_position_snapshots_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_position_snapshots'))
    )
    op.create_index('ix_position_snapshots_latest_per_user', 'position_snapshots', ['user_id', sa.literal_column('created_at DESC'), 'id'], unique=False)
    op.create_index(op.f('ix_position_snapshots_user_id_created_at'), 'position_snapshots', ['user_id', 'created_at'], unique=False)
    op.create_table('reconciliation_logs',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('signal_id', sa.String(length=64), nullable=True),
    sa.Column('approval_id', sa.String(length=64), nullable=True),
    sa.Column('mt5_position_id', sa.BigInteger(), nullable=True),
    sa.Column('symbol', sa.String(length=32), nullable=True),
    sa.Column('direction', sa.String(length=4), nullable=True),
    sa.Column('volume', sa.Numeric(precision=18, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('entry_price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('current_price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('take_profit', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('stop_loss', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('matched', sa.SmallInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('divergence_reason', sa.String(length=32), nullable=True),
    sa.Column('close_reason', sa.String(length=32), nullable=True),
    sa.Column('closed_price', sa.Numeric(precision=20, scale=8), nullable=True),
    sa.Column('pnl_gbp', sa.Numeric(precision=18, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('pnl_percent', sa.Numeric(precision=12, scale=4), server_default=sa.text('0'), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('matched', 'divergence', 'success', 'failed')", name=op.f('ck_reconciliation_logs_status')),
    sa.CheckConstraint('matched IN (0, 1, 2)', name=op.f('ck_reconciliation_logs_matched')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_reconciliation_logs_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_logs'))
    )
    op.create_index(op.f('ix_reconciliation_logs_approval_id'), 'reconciliation_logs', ['approval_id'], unique=False)
    op.create_index(op.f('ix_reconciliation_logs_event_type'), 'reconciliation_logs', ['event_type'], unique=False)
    op.create_index(op.f('ix_reconciliation_logs_mt5_position_id'), 'reconciliation_logs', ['mt5_position_id'], unique=False)
    op.create_index(op.f('ix_reconciliation_logs_signal_id'), 'reconciliation_logs', ['signal_id'], unique=False)
    op.create_index(op.f('ix_reconciliation_logs_status'), 'reconciliation_logs', ['status'], unique=False)
    op.create_index(op.f('ix_reconciliation_logs_symbol_created_at'), 'reconciliation_logs', ['symbol', 'created_at'], unique=False)
    op.create_index(op.f('ix_reconciliation_logs_user_id_created_at'), 'reconciliation_logs', ['user_id', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_reconciliation_logs_user_id_created_at'), table_name='reconciliation_logs')
    op.drop_index(op.f('ix_reconciliation_logs_symbol_created_at'), table_name='reconciliation_logs')
    op.drop_index(op.f('ix_reconciliation_logs_status'), table_name='reconciliation_logs')
    op.drop_index(op.f('ix_reconciliation_logs_signal_id'), table_name='reconciliation_logs')
    op.drop_index(op.f('ix_reconciliation_logs_mt5_position_id'), table_name='reconciliation_logs')
    op.drop_index(op.f('ix_reconciliation_logs_event_type'), table_name='reconciliation_logs')
    op.drop_index(op.f('ix_reconciliation_logs_approval_id'), table_name='reconciliation_logs')
    op.drop_table('reconciliation_logs')
    op.drop_index(op.f('ix_position_snapshots_user_id_created_at'), table_name='position_snapshots')
    op.drop_index('ix_position_snapshots_latest_per_user', table_name='position_snapshots')
    op.drop_table('position_snapshots')
    op.drop_index(op.f('ix_drawdown_alerts_user_id_created_at'), table_name='drawdown_alerts')
    op.drop_index(op.f('ix_drawdown_alerts_status'), table_name='drawdown_alerts')
    op.drop_index(op.f('ix_drawdown_alerts_alert_type'), table_name='drawdown_alerts')
    op.drop_table('drawdown_alerts')
    op.drop_table('users')
    op.drop_table('projection_progress')
