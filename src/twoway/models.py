"""Every table, imported in one place so Alembic sees the whole schema."""

from twoway.customers.models import Customer
from twoway.invoices import kind as _invoice_kind  # noqa: F401  (registers the invoice kind)
from twoway.invoices.models import Invoice, InvoiceLine
from twoway.kit.db import Base
from twoway.kit.idempotency import IdempotencyKey
from twoway.kit.outbox import OutboxMessage
from twoway.kit.ratelimit import RateLimitBucket
from twoway.sync.models import ConnectorState, Cursor, InboxEvent, WebhookRejection
from twoway.syncstate.models import Link, SyncEvent
from twoway.webhooks.models import WebhookRejectionCount

__all__ = ["Base", "ConnectorState", "Cursor", "Customer", "IdempotencyKey", "InboxEvent", "Invoice", "InvoiceLine",
           "Link", "OutboxMessage", "RateLimitBucket", "SyncEvent", "WebhookRejection", "WebhookRejectionCount"]
