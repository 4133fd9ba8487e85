"""Invoices and invoice items, in memory, with their order and attachments.

Like customers, stored dicts are never mutated (a change stores a new dict), so
events share them and a snapshot is a shallow copy. Invoices are stored without
`lines`; `billing.render_invoice` adds them from the attached items.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twoway.emulators.stripe.ids import rand_id
from twoway.emulators.stripe.order import Log

Obj = dict[str, Any]


class InvoiceBook:
    def __init__(self, on_change: Callable[[], None], auto_finalize_after: float = 3600) -> None:
        self._changed = on_change
        # Stripe finalizes an auto-advancing draft about an hour after it was created.
        self.auto_finalize_after = auto_finalize_after
        self.invoices: dict[str, Obj] = {}
        self.invoice_log = Log()
        self.deleted_invoices: set[str] = set()
        self.items: dict[str, Obj] = {}
        self.item_log = Log()
        self.deleted_items: set[str] = set()
        self.attached: dict[str, list[str]] = {}  # invoice id -> its item ids, oldest first
        self.line_ids: dict[str, str] = {}  # item id -> the id of its line on the invoice ("il_...")

    # -- invoices ---------------------------------------------------------------------

    def put_invoice(self, invoice: Obj) -> Obj | None:
        """Add or replace; returns the previous version."""
        ident = invoice["id"]
        old = self.invoices.get(ident)
        self.invoices[ident] = invoice
        if old is None:
            self.invoice_log.append(ident)
            self.attached.setdefault(ident, [])
        self._changed()
        return old

    def remove_invoice(self, ident: str) -> Obj:
        old = self.invoices.pop(ident)
        self.deleted_invoices.add(ident)
        self.attached.pop(ident, None)
        self._changed()
        return old

    def attached_items(self, invoice_id: str) -> list[Obj]:
        return [self.items[i] for i in self.attached.get(invoice_id, ())]

    # -- items -----------------------------------------------------------------------

    def put_item(self, item: Obj) -> Obj | None:
        """Add or replace; keeps the invoice's line list in step when `invoice` changes."""
        ident = item["id"]
        old = self.items.get(ident)
        self.items[ident] = item
        if old is None:
            self.item_log.append(ident)
        before = None if old is None else old["invoice"]
        if before != item["invoice"]:
            if before is not None:
                self._detach(before, ident)
            if item["invoice"] is not None:
                self.attached.setdefault(item["invoice"], []).append(ident)
                self.line_ids[ident] = rand_id("il_", 24)
        self._changed()
        return old

    def remove_item(self, ident: str) -> Obj:
        old = self.items.pop(ident)
        self.deleted_items.add(ident)
        if old["invoice"] is not None:
            self._detach(old["invoice"], ident)
        self._changed()
        return old

    def _detach(self, invoice_id: str, item_id: str) -> None:
        ids = self.attached.get(invoice_id)
        if ids is not None and item_id in ids:
            ids.remove(item_id)
        self.line_ids.pop(item_id, None)

    # -- lifecycle -------------------------------------------------------------------

    def clear(self) -> None:
        self.invoices.clear()
        self.invoice_log.clear()
        self.deleted_invoices.clear()
        self.items.clear()
        self.item_log.clear()
        self.deleted_items.clear()
        self.attached.clear()
        self.line_ids.clear()

    def snapshot(self) -> Obj:
        return {
            "invoice_order": list(self.invoice_log.ids),
            "invoices": dict(self.invoices),
            "item_order": list(self.item_log.ids),
            "items": dict(self.items),
            "attached": {k: list(v) for k, v in self.attached.items() if v},
            "line_ids": dict(self.line_ids),
        }

    def restore(self, data: Obj) -> None:
        self.clear()
        invoices: dict[str, Obj] = data.get("invoices", {})
        for ident in data.get("invoice_order", []):
            self.invoice_log.append(ident)
            if ident in invoices:
                self.invoices[ident] = invoices[ident]
                self.attached[ident] = []
            else:
                self.deleted_invoices.add(ident)
        items: dict[str, Obj] = data.get("items", {})
        for ident in data.get("item_order", []):
            self.item_log.append(ident)
            if ident in items:
                self.items[ident] = items[ident]
            else:
                self.deleted_items.add(ident)
        for invoice_id, item_ids in data.get("attached", {}).items():
            if invoice_id in self.invoices:
                self.attached[invoice_id] = [i for i in item_ids if i in self.items]
        self.line_ids.update(data.get("line_ids", {}))
