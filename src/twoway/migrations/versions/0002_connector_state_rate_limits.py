"""connector_state (circuit breakers) and rate_limits (shared token buckets)

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('connector_state',
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('breaker', sa.Text(), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.Column('consecutive_failures', sa.Integer(), server_default='0', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('system', name=op.f('pk_connector_state'))
    )
    op.create_table('rate_limits',
    sa.Column('account', sa.Text(), nullable=False),
    sa.Column('limit_per_second', sa.Float(), nullable=False),
    sa.Column('rate', sa.Float(), nullable=False),
    sa.Column('tokens', sa.Float(), nullable=False),
    sa.Column('refilled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('shrunk_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('account', name=op.f('pk_rate_limits'))
    )


def downgrade() -> None:
    op.drop_table('rate_limits')
    op.drop_table('connector_state')
