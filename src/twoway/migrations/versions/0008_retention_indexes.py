"""indexes for retention: processed inbox events by age (all, and those still holding a payload), sync_events
rows that name no record by external id, idempotency keys by age

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_inbox_processed', 'inbox', ['processed_at'], unique=False,
                    postgresql_where=sa.text('processed_at IS NOT NULL'))
    op.create_index('ix_inbox_payload_kept', 'inbox', ['processed_at'], unique=False,
                    postgresql_where=sa.text("processed_at IS NOT NULL AND payload <> '{}'::jsonb"))
    op.create_index('ix_sync_events_loose', 'sync_events', ['kind', 'system', 'external_id'], unique=False,
                    postgresql_where=sa.text('internal_id IS NULL'))
    op.create_index('ix_idempotency_keys_created_at', 'idempotency_keys', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_idempotency_keys_created_at', table_name='idempotency_keys')
    op.drop_index('ix_sync_events_loose', table_name='sync_events')
    op.drop_index('ix_inbox_payload_kept', table_name='inbox')
    op.drop_index('ix_inbox_processed', table_name='inbox')
