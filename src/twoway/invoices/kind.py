"""The invoice kind, registered with its merge rules as data (see `twoway.kit.rules`).

- Draft fields both sides edit (description, collection method, due date, lines): 3-way merged.
- Stripe owns its confirmation of the status, the number, the totals, the amount paid and the payment page.
- `status` is where the invoice is headed (a command of ours, or Stripe's confirmed state): a ladder,
  monotonic, paid and void terminal, two different terminals a recorded conflict.
- A finalized invoice cannot be deleted over there: an open one's end state is void. A draft is deleted.
  A draft deleted here that Stripe finalized, paid, voided or wrote off first comes back here with
  Stripe's state (money that moved wins), recorded.
- The parent is the customer: an invoice waits for its customer's link; an unknown one is imported first.
  A draft of ours whose customer Stripe deleted before the draft got there is deleted here (recorded); a
  Stripe invoice of a customer deleted there before we saw it is imported on a deleted customer row.
"""

from __future__ import annotations

from twoway.invoices import wire
from twoway.invoices.models import STATUSES, TERMINAL, Invoice
from twoway.invoices.sync_store import InvoiceStore
from twoway.kit import records
from twoway.kit.rules import Deletion, Ladder, Parent, Rules

RULES = Rules(
    owned=dict.fromkeys(wire.THEIRS, "theirs"),
    ladder=Ladder("status", STATUSES, TERMINAL),
    deletion=Deletion(end_state={"status": "void"}, deletable_in=frozenset({"draft"}),
                      end_from=frozenset({"open"}), restore=True),
    parent=Parent("customer", "customer_id", orphans="delete", tombstone=True),
)

INVOICE = records.register(records.Kind(name="invoice", model=Invoice, fields=wire.FIELDS, rules=RULES,
                                        store=InvoiceStore()))
