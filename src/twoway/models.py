"""Every table, imported in one place so Alembic sees the whole schema."""

from twoway.customers.models import Customer
from twoway.kit.db import Base
from twoway.kit.idempotency import IdempotencyKey
from twoway.kit.outbox import OutboxMessage
from twoway.sync.models import Cursor, InboxEvent, Link, SyncEvent, WebhookRejection
from twoway.webhooks.models import WebhookRejectionCount

__all__ = ["Base", "Cursor", "Customer", "IdempotencyKey", "InboxEvent", "Link", "OutboxMessage", "SyncEvent",
           "WebhookRejection", "WebhookRejectionCount"]
