"""Reading invoices: the list with its filters, an invoice's lines, search, and the admin dump."""

from __future__ import annotations

from typing import Any

from twoway.emulators.stripe import lifecycle, search
from twoway.emulators.stripe.billing import invoice_or_404, render_invoice, render_line
from twoway.emulators.stripe.errors import invalid, unknown_param
from twoway.emulators.stripe.invoices import METHODS
from twoway.emulators.stripe.paging import list_body, paginate, range_filter
from twoway.emulators.stripe.state import Obj, Store

_LIST = frozenset(
    {"limit", "starting_after", "ending_before", "customer", "status", "collection_method", "created", "due_date",
     "subscription", "expand"}
)
_SEARCH_STRINGS = frozenset({"currency", "customer", "number", "receipt_number", "status", "subscription"})


def list_invoices(store: Store, params: Obj) -> Obj:
    for name in params:
        if name not in _LIST:
            raise unknown_param(name)
    checks: list[Any] = []
    customer = params.get("customer")
    if isinstance(customer, str):
        checks.append(lambda i: i["customer"] == customer)
    status = params.get("status")
    if status is not None:
        if status not in lifecycle.STATUSES:
            raise invalid("Invalid status: must be one of draft, open, paid, uncollectible, or void",
                          param="status")
        checks.append(lambda i: i["status"] == status)
    method = params.get("collection_method")
    if method is not None:
        if method not in METHODS:
            raise invalid(f"Invalid collection_method: must be one of {', '.join(METHODS)}",
                          param="collection_method")
        checks.append(lambda i: i["collection_method"] == method)
    if params.get("subscription"):
        checks.append(lambda i: False)  # the emulator has no subscriptions
    for field in ("created", "due_date"):
        bound = range_filter(params, field)
        if bound is not None:
            checks.append(lambda i, f=field, b=bound: i[f] is not None and b(i[f]))
    keep = (lambda i: all(c(i) for c in checks)) if checks else None
    log = store.book.invoice_log
    page, more = paginate(log.ids, log.index, store.book.invoices.get, keep, params, "invoice")
    return list_body([render_invoice(store, i) for i in page], more, "/v1/invoices")


def list_lines(store: Store, ident: str, params: Obj) -> Obj:
    """`GET /v1/invoices/{id}/lines`: the invoice's lines in order, cursor-paged by line id."""
    for name in params:
        if name not in ("limit", "starting_after", "ending_before", "expand"):
            raise unknown_param(name)
    invoice_or_404(store, ident, "invoice")
    book = store.book
    items = {book.line_ids[i]: book.items[i] for i in book.attached.get(ident, ())}
    # paginate() walks newest first; feeding it the reversed order yields the invoice's own order.
    order = list(reversed(items))
    position = {line: n for n, line in enumerate(order)}

    def get(line: str) -> Obj | None:
        item = items.get(line)
        return None if item is None else render_line(store, item)

    page, more = paginate(order, position.get, get, None, params, "invoice line item")
    return list_body(page, more, f"/v1/invoices/{ident}/lines")


def search_invoices(store: Store, params: Obj) -> Obj:
    def parse(query: str) -> search.Predicate:
        return search.parse_query(query, _SEARCH_STRINGS, frozenset({"created", "total"}), "invoices")

    invoices = list(store.book.invoices.values())
    return search.search(params, invoices, parse, "/v1/invoices/search", lambda i: render_invoice(store, i))


def dump(store: Store) -> list[Obj]:
    """Every invoice with all its lines, oldest first (the `/_emulator/invoices` admin view)."""
    out = []
    for invoice in store.book.invoices.values():
        rendered = render_invoice(store, invoice)
        items = store.book.attached_items(invoice["id"])
        rendered["lines"] = {**rendered["lines"], "data": [render_line(store, i) for i in items], "has_more": False}
        out.append(rendered)
    return out
