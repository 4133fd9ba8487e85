"""customers.uid, invoices.uid: a random identity per record that a restored database cannot re-issue
(existing rows get one each: a volatile default fills every row)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


TABLES = ('customers', 'invoices')


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column('uid', sa.Uuid(), server_default=sa.text('gen_random_uuid()'), nullable=False))
        op.create_unique_constraint(f'uq_{table}_uid', table, ['uid'])


def downgrade() -> None:
    for table in TABLES:
        op.drop_constraint(f'uq_{table}_uid', table, type_='unique')
        op.drop_column(table, 'uid')
