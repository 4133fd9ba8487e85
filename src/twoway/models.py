"""Every table, imported in one place so Alembic sees the whole schema."""

from twoway.customers.models import Customer
from twoway.invoices.models import Invoice, InvoiceLine
from twoway.kit.db import Base
from twoway.kit.outbox import OutboxMessage
from twoway.sync.models import Cursor, InboxEvent, Link, SyncEvent, WebhookRejection

__all__ = ["Base", "Cursor", "Customer", "InboxEvent", "Invoice", "InvoiceLine", "Link", "OutboxMessage", "SyncEvent",
           "WebhookRejection"]
