"""Guard profiles: ``users.guard_profile`` names the account's rule set, ``users.initial_balance_gbp`` the
balance the prop-firm profiles measure from (NULL: the first reading's balance).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('users', sa.Column('guard_profile', sa.String(length=64), server_default='default',
                                     nullable=False))
    op.add_column('users', sa.Column('initial_balance_gbp', sa.Numeric(precision=18, scale=4), nullable=True))


def downgrade() -> None:
    op.drop_column('users', 'initial_balance_gbp')
    op.drop_column('users', 'guard_profile')
