"""The invoice lifecycle as data: which call moves which status where, and what stays editable.

Pure: no store, no I/O, so the table is unit-tested on its own.
"""

from __future__ import annotations

from twoway.emulators.stripe.errors import StripeError, invalid

DRAFT, OPEN, PAID, VOID, UNCOLLECTIBLE = "draft", "open", "paid", "void", "uncollectible"
STATUSES = (DRAFT, OPEN, PAID, UNCOLLECTIBLE, VOID)
TERMINAL = frozenset({PAID, VOID})

# (from, action) -> to. Paying a draft finalizes it first (the caller does both steps).
TRANSITIONS: dict[tuple[str, str], str] = {
    (DRAFT, "finalize"): OPEN,
    (DRAFT, "pay"): PAID,
    (OPEN, "pay"): PAID,
    (OPEN, "void"): VOID,
    (OPEN, "mark_uncollectible"): UNCOLLECTIBLE,
    (UNCOLLECTIBLE, "pay"): PAID,
    (UNCOLLECTIBLE, "void"): VOID,
}

# Once finalized only these invoice fields may change; the rest answer FROZEN_MESSAGE.
EDITABLE_AFTER_FINALIZE = frozenset({"metadata", "auto_advance", "expand"})
FROZEN_MESSAGE = "Finalized invoices can't be updated in this way"
NOT_EDITABLE = "invoice_not_editable"


def next_status(status: str, action: str) -> str:
    """The status `action` leads to from `status`, or the 400 Stripe answers."""
    target = TRANSITIONS.get((status, action))
    if target is None:
        raise refusal(status, action)
    return target


def refusal(status: str, action: str) -> StripeError:
    if action == "finalize":
        return invalid("This invoice is already finalized, you can't re-finalize a non-draft invoice.")
    if action == "delete":
        return invalid("You can only delete draft invoices.")
    if action == "pay":
        return invalid(f"Invoice is already {status}")
    if action == "void":
        if status == DRAFT:
            return invalid("You can only void an open or uncollectible invoice. Delete a draft invoice instead.")
        if status == PAID:
            return invalid("You cannot void a paid invoice. Refund its payment or issue a credit note instead.")
        return invalid("Invoice is already void")
    if action == "mark_uncollectible":
        return invalid(f"You can only mark an open invoice as uncollectible. This invoice is {status}.")
    return invalid(f"This action is not allowed on an invoice with status {status}.")


def check_delete(status: str) -> None:
    if status != DRAFT:
        raise refusal(status, "delete")


def frozen_params(status: str, params: dict[str, object]) -> list[str]:
    """Parameters an update may not touch in this status (empty while a draft)."""
    if status == DRAFT:
        return []
    return sorted(name for name in params if name not in EDITABLE_AFTER_FINALIZE)


def items_locked(invoice_status: str | None) -> bool:
    """An invoice item can be added, changed or deleted only while pending or on a draft."""
    return invoice_status is not None and invoice_status != DRAFT


def locked_items_error(action: str) -> StripeError:
    return StripeError(
        400,
        f"You can only {action} invoice items on draft invoices; this invoice is finalized.",
        code=NOT_EDITABLE,
        param="invoice",
    )
