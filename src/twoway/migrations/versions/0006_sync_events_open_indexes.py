"""partial indexes over open sync_events rows, by internal and by external id

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

OPEN_ROWS = sa.text("status IN ('retry', 'requeued', 'started', 'dead')")


def upgrade() -> None:
    op.create_index('ix_sync_events_open_internal', 'sync_events', ['kind', 'system', 'internal_id'], unique=False,
                    postgresql_where=OPEN_ROWS)
    op.create_index('ix_sync_events_open_external', 'sync_events', ['kind', 'system', 'external_id'], unique=False,
                    postgresql_where=OPEN_ROWS)


def downgrade() -> None:
    op.drop_index('ix_sync_events_open_external', table_name='sync_events')
    op.drop_index('ix_sync_events_open_internal', table_name='sync_events')
