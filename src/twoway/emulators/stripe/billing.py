"""What invoices and invoice items share: rendering, totals refresh, change events."""

from __future__ import annotations

import re

from twoway.emulators.stripe import totals
from twoway.emulators.stripe.errors import invalid, missing
from twoway.emulators.stripe.paging import list_body
from twoway.emulators.stripe.state import Obj, Origin, Store

EMBEDDED_LINES = 10  # an invoice carries its first 10 lines; the rest via /v1/invoices/{id}/lines


def invoice_or_404(store: Store, ident: str, param: str = "id") -> Obj:
    invoice = store.book.invoices.get(ident)
    if invoice is None:
        raise missing("invoice", ident, param)
    return invoice


def customer_or_404(store: Store, ident: object, param: str = "customer") -> Obj:
    customer = store.customers.get(ident) if isinstance(ident, str) else None
    if customer is None:
        raise missing("customer", str(ident), param)
    return customer


def check_rejected(values: dict[str, object], pattern: re.Pattern[str] | None) -> None:
    """The `reject_pattern` fault knob, applied to descriptions as it is to names and emails."""
    if pattern is None:
        return
    for field, value in values.items():
        if isinstance(value, str) and value and pattern.search(value):
            raise invalid(f"Invalid {field}: '{value}' is not allowed by this account.", param=field)


# -- rendering ----------------------------------------------------------------------


def render_line(store: Store, item: Obj) -> Obj:
    """The invoice's line for an invoice item (Stripe's `line_item`, invoice-item parent)."""
    return {
        "id": store.book.line_ids.get(item["id"], item["id"]),
        "object": "line_item",
        "amount": item["amount"],
        "currency": item["currency"],
        "description": item["description"],
        "discount_amounts": [],
        "discountable": item["discountable"],
        "discounts": [],
        "invoice": item["invoice"],
        "livemode": item["livemode"],
        "metadata": item["metadata"],
        "parent": {
            "invoice_item_details": {
                "invoice_item": item["id"],
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": None,
            },
            "subscription_item_details": None,
            "type": "invoice_item_details",
        },
        "period": item["period"],
        "pretax_credit_amounts": [],
        "pricing": item["pricing"],
        "quantity": item["quantity"],
        "quantity_decimal": item["quantity_decimal"],
        "subscription": None,
        "subtotal": item["amount"],
        "taxes": [],
    }


def render_invoice(store: Store, invoice: Obj) -> Obj:
    items = store.book.attached_items(invoice["id"])
    lines = list_body(
        [render_line(store, i) for i in items[:EMBEDDED_LINES]],
        len(items) > EMBEDDED_LINES,
        f"/v1/invoices/{invoice['id']}/lines",
    )
    lines["total_count"] = len(items)
    return {**invoice, "lines": lines}


def deleted_stub(kind: str, ident: str) -> Obj:
    return {"id": ident, "object": kind, "deleted": True}


# -- changes ------------------------------------------------------------------------


def previous_attributes(old: Obj, new: Obj) -> Obj:
    """Old values of the changed keys; nested hashes (metadata, status_transitions) per changed key."""
    previous: Obj = {}
    for name, value in new.items():
        before = old.get(name)
        if name == "lines" or value == before:
            continue
        if isinstance(value, dict) and isinstance(before, dict):
            keys = {k for k in before.keys() | value.keys() if before.get(k) != value.get(k)}
            previous[name] = {k: before.get(k) for k in sorted(keys)}
        else:
            previous[name] = before
    return previous


def commit_invoice(store: Store, old: Obj | None, steps: list[tuple[str | None, Obj]], origin: Origin) -> Obj:
    """Store each step's invoice and record its event, then one `invoice.updated` for the whole call.

    A call can pass through several states (paying a draft finalizes it first); each named
    event carries the invoice as it was at that step, the final `invoice.updated` carries
    `previous_attributes` against the state before the call.
    """
    final = old
    for event_type, invoice in steps:
        store.book.put_invoice(invoice)
        final = invoice
        if event_type is not None:
            store.record_event(event_type, render_invoice(store, invoice), origin)
    assert final is not None
    rendered = render_invoice(store, final)
    if old is not None:
        previous = previous_attributes(old, final)
        if previous:
            store.record_event("invoice.updated", rendered, origin, previous)
    return rendered


def money(store: Store, invoice: Obj) -> dict[str, int]:
    amounts = [i["amount"] for i in store.book.attached_items(invoice["id"])]
    return totals.compute(amounts, invoice["amount_paid"], invoice["amount_paid_off_stripe"])


def refresh_totals(store: Store, invoice_id: str, origin: Origin) -> None:
    """After a draft's items changed: store its new totals, `invoice.updated` when they moved."""
    invoice = store.book.invoices.get(invoice_id)
    if invoice is None:
        return
    fresh = {**invoice, **money(store, invoice)}
    if fresh != invoice:
        commit_invoice(store, invoice, [(None, fresh)], origin)
