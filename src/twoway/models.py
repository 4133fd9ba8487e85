"""Every table, imported in one place so Alembic sees the whole schema."""

from twoway.customers.models import Customer
from twoway.kit.db import Base
from twoway.kit.outbox import OutboxMessage
from twoway.kit.ratelimit import RateLimitBucket
from twoway.sync.models import ConnectorState, Cursor, InboxEvent, Link, SyncEvent, WebhookRejection

__all__ = ["Base", "ConnectorState", "Cursor", "Customer", "InboxEvent", "Link", "OutboxMessage", "RateLimitBucket",
           "SyncEvent", "WebhookRejection"]
