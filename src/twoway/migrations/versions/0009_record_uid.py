"""customers.uid: a random identity per record that a restored database cannot re-issue (existing rows get
one each: a volatile default fills every row)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('customers', sa.Column('uid', sa.Uuid(), server_default=sa.text('gen_random_uuid()'),
                                         nullable=False))
    op.create_unique_constraint('uq_customers_uid', 'customers', ['uid'])


def downgrade() -> None:
    op.drop_constraint('uq_customers_uid', 'customers', type_='unique')
    op.drop_column('customers', 'uid')
