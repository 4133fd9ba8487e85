"""Overlapping writes to one invoice: Stripe may answer 429 `lock_timeout` (fault knob `invoice_lock_timeout`).

Which invoice a write touches: the path's invoice, an item create's `invoice` parameter, or
the invoice an existing item sits on. A write holds its invoice from its latency wait to its
answer, so with `latency_ms` set, two concurrent writes to one invoice collide as they can at Stripe.
"""

from __future__ import annotations

from twoway.emulators.stripe.errors import StripeError
from twoway.emulators.stripe.forms import parse_form
from twoway.emulators.stripe.state import Store

_INVOICE_PATHS = ("POST /v1/invoices/{id}", "DELETE /v1/invoices/{id}")
_ITEM_PATHS = ("POST /v1/invoiceitems/{id}", "DELETE /v1/invoiceitems/{id}")


def invoice_of(store: Store, label: str, ident: str, raw: bytes) -> str | None:
    if label.startswith(_INVOICE_PATHS):
        return ident.partition("/")[0]
    if label == "POST /v1/invoiceitems":
        invoice = parse_form(raw).get("invoice")
        return invoice if isinstance(invoice, str) and invoice else None
    if label in _ITEM_PATHS:
        item = store.book.items.get(ident)
        return None if item is None else item["invoice"]
    return None


def lock_timeout() -> StripeError:
    return StripeError(
        429,
        "This object cannot be accessed right now because another API request or Stripe process is currently "
        "accessing it. If you see this error intermittently, retry the request. If you see this error "
        "frequently and are making multiple concurrent requests to a single object, make your requests "
        "serially or at a lower rate.",
        code="lock_timeout",
    )
