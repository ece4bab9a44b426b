"""Alert lifecycle: one drawdown_alerts row per alert, updated as the alert changes state.

``revision`` orders an alert's states (the projector keeps the row of the highest revision, so a
redelivered or replayed older state never overwrites a newer one); ``updated_at`` is when the
row's current state happened.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('drawdown_alerts', sa.Column('revision', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.add_column('drawdown_alerts', sa.Column('updated_at', sa.DateTime(timezone=True),
                                               server_default=sa.text('now()'), nullable=False))


def downgrade() -> None:
    op.drop_column('drawdown_alerts', 'updated_at')
    op.drop_column('drawdown_alerts', 'revision')
