"""A draft's lines in batches: `add_lines`, `update_lines`, `remove_lines`, and one line's update.

Every line is an invoice item underneath (a new one, or a pending one joining the draft),
so the item events fire as they would one call at a time; the invoice gets one
`invoice.updated` per call. The whole batch is validated before anything changes.
"""

from __future__ import annotations

import re
from typing import Any

from twoway.emulators.stripe import invoiceitems, lifecycle
from twoway.emulators.stripe.billing import commit_invoice, invoice_or_404, money, previous_attributes, render_line
from twoway.emulators.stripe.errors import invalid, missing, unknown_param
from twoway.emulators.stripe.fields import merge_metadata
from twoway.emulators.stripe.state import Obj, Origin, Store
from twoway.emulators.stripe.totals import MAX_ITEMS_PER_INVOICE

_ADD = frozenset({"amount", "description", "discountable", "discounts", "invoice_item", "metadata", "period",
                  "price_data", "pricing", "quantity", "quantity_decimal", "tax_amounts", "tax_rates"})
_UPDATE = _ADD - {"invoice_item"}
_IGNORED = frozenset({"tax_amounts"})  # no taxes in the emulator


def _batch(params: Obj, allowed: frozenset[str]) -> list[Obj]:
    for name in params:
        if name not in ("lines", "invoice_metadata", "expand"):
            raise unknown_param(name)
    lines = params.get("lines")
    if lines is None or lines == "":
        raise invalid("Missing required param: lines.", param="lines", code="parameter_missing")
    if not isinstance(lines, list) or not lines or not all(isinstance(x, dict) for x in lines):
        raise invalid("Invalid array", param="lines")
    for n, line in enumerate(lines):
        for name in line:
            if name not in allowed:
                raise unknown_param(f"lines[{n}][{name}]")
    return lines


def _draft(store: Store, ident: str, action: str) -> Obj:
    invoice = invoice_or_404(store, ident, "invoice")
    if lifecycle.items_locked(invoice["status"]):
        raise lifecycle.locked_items_error(action)
    return invoice


def _item_of_line(store: Store, invoice_id: str, line_id: Any, param: str) -> Obj:
    for item_id in store.book.attached.get(invoice_id, ()):
        if store.book.line_ids.get(item_id) == line_id:
            return store.book.items[item_id]
    raise missing("invoice line item", str(line_id), param)


def _fields(line: Obj, drop: tuple[str, ...] = ()) -> Obj:
    return {k: v for k, v in line.items() if k not in _IGNORED and k not in drop}


def _finish(store: Store, invoice: Obj, params: Obj, origin: Origin) -> Obj:
    """One `invoice.updated` for the call: new totals and any `invoice_metadata`."""
    current = store.book.invoices[invoice["id"]]
    fresh = {**current, **money(store, current)}
    if "invoice_metadata" in params:
        fresh["metadata"] = merge_metadata(current["metadata"], params["invoice_metadata"])
    return commit_invoice(store, current, [(None, fresh)], origin)


def add_lines(store: Store, ident: str, params: Obj, origin: Origin, reject: re.Pattern[str] | None = None) -> Obj:
    lines = _batch(params, _ADD)
    invoice = _draft(store, ident, "add")
    if "invoice_metadata" in params:
        merge_metadata(invoice["metadata"], params["invoice_metadata"])  # validate before changing anything
    created: list[Obj] = []
    joined: list[tuple[Obj, Obj]] = []
    for n, line in enumerate(lines):
        queued = len(created) + len(joined)
        if "invoice_item" in line:
            item = _pending_item(store, invoice, line["invoice_item"], f"lines[{n}][invoice_item]")
            moving = {**item, "invoice": ident}
            joined.append((item, invoiceitems.build_update(store, moving, _fields(line, ("invoice_item",)), reject)))
            if len(store.book.attached.get(ident, ())) + queued >= MAX_ITEMS_PER_INVOICE:
                raise invalid(f"An invoice can have at most {MAX_ITEMS_PER_INVOICE} invoice items.", param="lines")
        else:
            fields = {**_fields(line), "customer": invoice["customer"], "invoice": ident}
            created.append(invoiceitems.build_new(store, fields, origin, reject, queued=queued))
    for item in created:
        store.book.put_item(item)
        store.record_event("invoiceitem.created", item, origin)
    for before, after in joined:
        store.book.put_item(after)
        store.record_event("invoiceitem.updated", after, origin, {"invoice": None, **_diff(before, after)})
    return _finish(store, invoice, params, origin)


def _diff(before: Obj, after: Obj) -> Obj:
    return {k: v for k, v in previous_attributes(before, after).items() if k != "invoice"}


def _pending_item(store: Store, invoice: Obj, ident: Any, param: str) -> Obj:
    item = store.book.items.get(ident) if isinstance(ident, str) else None
    if item is None:
        raise missing("invoiceitem", str(ident), param)
    if item["invoice"] is not None:
        raise invalid(f"The invoice item {ident} is already on an invoice.", param=param)
    if item["customer"] != invoice["customer"] or item["currency"] != invoice["currency"]:
        raise invalid(f"The invoice item {ident} must have the invoice's customer and currency.", param=param)
    return item


def update_lines(store: Store, ident: str, params: Obj, origin: Origin, reject: re.Pattern[str] | None = None) -> Obj:
    lines = _batch(params, _UPDATE | {"id"})
    invoice = _draft(store, ident, "update")
    if "invoice_metadata" in params:
        merge_metadata(invoice["metadata"], params["invoice_metadata"])
    changes: list[tuple[Obj, Obj]] = []
    for n, line in enumerate(lines):
        if "id" not in line:
            raise invalid(f"Missing required param: lines[{n}][id].", param=f"lines[{n}][id]",
                          code="parameter_missing")
        current = _item_of_line(store, ident, line["id"], f"lines[{n}][id]")
        changes.append((current, invoiceitems.build_update(store, current, _fields(line, ("id",)), reject)))
    for current, item in changes:
        invoiceitems.save_update(store, current, item, origin)
    return _finish(store, invoice, params, origin)


def remove_lines(store: Store, ident: str, params: Obj, origin: Origin) -> Obj:
    lines = _batch(params, frozenset({"id", "behavior"}))
    invoice = _draft(store, ident, "delete")
    if "invoice_metadata" in params:
        merge_metadata(invoice["metadata"], params["invoice_metadata"])
    removals: list[tuple[Obj, str]] = []
    for n, line in enumerate(lines):
        behavior = line.get("behavior")
        if behavior not in ("delete", "unassign"):
            raise invalid("Invalid behavior: must be one of delete, unassign", param=f"lines[{n}][behavior]")
        removals.append((_item_of_line(store, ident, line.get("id"), f"lines[{n}][id]"), str(behavior)))
    for item, behavior in removals:
        if behavior == "delete":
            store.book.remove_item(item["id"])
            store.record_event("invoiceitem.deleted", item, origin)
        else:
            pending = {**item, "invoice": None}
            store.book.put_item(pending)
            store.record_event("invoiceitem.updated", pending, origin, {"invoice": ident})
    return _finish(store, invoice, params, origin)


def update_line(store: Store, path: str, params: Obj, origin: Origin, reject: re.Pattern[str] | None = None) -> Obj:
    """`POST /v1/invoices/{id}/lines/{line}`: change one line; answers the line."""
    ident, _, line_id = path.partition("/")
    for name in params:
        if name not in _UPDATE | {"expand"}:
            raise unknown_param(name)
    invoice = _draft(store, ident, "update")
    current = _item_of_line(store, ident, line_id, "line_item_id")
    item = invoiceitems.build_update(store, current, _fields(params), reject)
    if invoiceitems.save_update(store, current, item, origin):
        _finish(store, invoice, {}, origin)
    return render_line(store, item)
