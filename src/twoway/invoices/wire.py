"""The invoice's synced fields as text, the form both sides are compared in (pure; no I/O).

Lines travel as one field: canonical JSON of {id, description, quantity, unit_amount}, sorted by our line
id (lines the other side made, with no id of ours yet, last). Order is ours alone: Stripe cannot reorder
invoice items, so the position is not part of what is synced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

FIELDS = ("customer_id", "currency", "collection_method", "due_date", "description", "lines", "status",
          "confirmed_status", "number", "subtotal", "total", "amount_due", "amount_paid", "hosted_invoice_url")
# Copied from Stripe, never pushed: its confirmation of the status, its number, totals and payment page.
THEIRS = ("confirmed_status", "number", "subtotal", "total", "amount_due", "amount_paid", "hosted_invoice_url")
AMOUNTS = ("subtotal", "total", "amount_due", "amount_paid")


def encode_lines(lines: Iterable[Mapping[str, Any]]) -> str:
    entries = [{"id": line.get("id"), "description": line.get("description") or "",
                "quantity": int(line["quantity"]), "unit_amount": int(line["unit_amount"])} for line in lines]
    entries.sort(key=lambda e: (e["id"] is None, e["id"] or 0, e["description"], e["quantity"], e["unit_amount"]))
    return json.dumps(entries, separators=(",", ":"), sort_keys=True)


def decode_lines(value: str) -> list[dict[str, Any]]:
    if not value:
        return []
    raw = json.loads(value)
    return [{"id": e.get("id"), "description": str(e.get("description") or ""), "quantity": int(e["quantity"]),
             "unit_amount": int(e["unit_amount"])} for e in raw]
