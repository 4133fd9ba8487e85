"""rate_limits: a bucket per endpoint within an account's (key: account, endpoint; "" is the account's own)

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('rate_limits', sa.Column('endpoint', sa.Text(), server_default='', nullable=False))
    op.drop_constraint('pk_rate_limits', 'rate_limits', type_='primary')
    op.create_primary_key('pk_rate_limits', 'rate_limits', ['account', 'endpoint'])


def downgrade() -> None:
    op.execute("DELETE FROM rate_limits WHERE endpoint <> ''")
    op.drop_constraint('pk_rate_limits', 'rate_limits', type_='primary')
    op.create_primary_key('pk_rate_limits', 'rate_limits', ['account'])
    op.drop_column('rate_limits', 'endpoint')
