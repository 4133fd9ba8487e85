"""Invoice writes. Each one bumps the invoice's version and queues its outbox message, in the caller's
transaction; a line change is a change of its invoice.

Refusals raise before anything is written, so a refused request changes nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.invoices.models import RANK, TERMINAL, Invoice, InvoiceLine
from twoway.invoices.repository import LOCK_CUSTOMER, InvoiceRepository
from twoway.invoices.schemas import InvoiceCreate, LineIn
from twoway.kit import records
from twoway.syncstate.models import SyncEvent
from twoway.syncstate.words import Direction, Operation, Status

KIND = "invoice"
# Fixed when the invoice is created: Stripe's invoice update takes neither.
FIXED = ("customer_id", "currency")
COMMANDS = {"finalize": "open", "void": "void", "mark_uncollectible": "uncollectible", "pay": "paid"}
# Stripe's lifecycle: where each command may start from (paying a draft finalizes it first).
ALLOWED_FROM = {
    "finalize": {"draft"},
    "void": {"open", "uncollectible"},
    "mark_uncollectible": {"open"},
    "pay": {"draft", "open", "uncollectible"},
}
HINTS = {"void": "a draft is deleted, not voided", "mark_uncollectible": "finalize it first"}


class InvoiceNotFound(LookupError):
    pass


class InvalidInvoice(ValueError):
    """The request is malformed for this invoice (422)."""


class Refused(Exception):
    """The request is well formed but the invoice's state forbids it (409)."""


async def get_live(session: AsyncSession, invoice_id: int, *, for_update: bool = False) -> Invoice:
    invoice = await InvoiceRepository(session).get(invoice_id, for_update=for_update)
    if invoice is None or invoice.deleted_at is not None:
        raise InvoiceNotFound(invoice_id)
    return invoice


async def create(session: AsyncSession, body: InvoiceCreate) -> Invoice:
    live = (await session.execute(LOCK_CUSTOMER, {"id": body.customer_id})).scalar()
    if not live:
        raise InvalidInvoice(f"customer {body.customer_id} not found")
    invoice = Invoice(
        customer_id=body.customer_id, currency=body.currency, collection_method=body.collection_method,
        days_until_due=body.days_until_due, description=body.description,
        due_date=body.due_date if body.days_until_due is None else due_from_days(body.days_until_due),
        status="draft", lines=[_new_line(i, entry) for i, entry in enumerate(body.lines)])
    _retotal(invoice)
    await records.write(session, KIND, [invoice])
    return invoice


async def update(session: AsyncSession, invoice: Invoice, changes: dict[str, Any]) -> bool:
    """Apply the given fields; `lines` replaces the list. False (nothing written) when nothing differs."""
    lines = changes.pop("lines", None)
    changed = {k: v for k, v in changes.items() if getattr(invoice, k) != v}
    if invoice.effective_status != "draft":
        frozen = sorted(changed) + (["lines"] if lines is not None else [])
        if frozen:
            raise Refused(f"invoice {invoice.id} is {invoice.effective_status}: {', '.join(frozen)} cannot "
                          "change after finalization (void it and create a new one)")
        return False
    fixed = [k for k in FIXED if k in changed]
    if fixed:
        raise Refused(f"{', '.join(fixed)} of an invoice is fixed when it is created "
                      "(delete the draft and create a new one)")
    _check_new_terms(invoice, changed)
    plan = _plan_lines(invoice, lines) if lines is not None else None
    if not changed and plan is None:
        return False
    for key, value in changed.items():
        setattr(invoice, key, value)
    if plan is not None:
        invoice.lines = plan
        _retotal(invoice)
    await records.write(session, KIND, [invoice])
    return True


async def delete(session: AsyncSession, invoice: Invoice, *, confirm_locally: bool) -> str:
    """A draft is deleted ("deleted"); a finalized invoice cannot be, so it is voided ("voided", recorded);
    a paid or void one refuses. "unchanged" when already deleted."""
    if invoice.deleted_at is not None:
        return "unchanged"
    if invoice.effective_status == "draft":
        invoice.deleted_at = func.now()  # type: ignore[assignment]
        await records.write(session, KIND, [invoice])
        return "deleted"
    if invoice.effective_status in TERMINAL:
        raise Refused(f"invoice {invoice.id} is {invoice.effective_status}: it can be neither deleted nor voided")
    await command(session, invoice, "void", confirm_locally=confirm_locally)
    session.add(SyncEvent(kind=KIND, system="api", direction=Direction.OUTBOUND, operation=Operation.DELETE,
                          status=Status.MAPPED, internal_id=invoice.id,
                          detail={"mapped_to": "void", "reason": "a finalized invoice cannot be deleted"}))
    await session.flush()
    return "voided"


async def command(session: AsyncSession, invoice: Invoice, name: str, *, confirm_locally: bool) -> bool:
    """Ask for a transition. False when the invoice is (or is already headed) there.

    The external system confirms the new status; with no system that holds invoices, it holds at once.
    """
    target, current = COMMANDS[name], invoice.effective_status
    if current == target:
        return False
    if current not in ALLOWED_FROM[name]:
        hint = HINTS.get(name, "") if current == "draft" else ""
        terminal = " (a terminal status)" if current in TERMINAL else ""
        raise Refused(f"cannot {name.replace('_', ' ')} invoice {invoice.id}: it is {current}{terminal}"
                      + (f"; {hint}" if hint else ""))
    if confirm_locally:
        apply_status(invoice, target)
    else:
        invoice.requested_status = target
    await records.write(session, KIND, [invoice])
    return True


def apply_status(invoice: Invoice, status: str) -> None:
    """A confirmed status; a pending command that it reached (or passed) is done."""
    invoice.status = status
    if status == "paid":
        invoice.amount_paid, invoice.amount_due = invoice.total, 0
    requested = invoice.requested_status
    if requested is not None and (status in TERMINAL or RANK[status] >= RANK[requested]):
        invoice.requested_status = None


def _check_new_terms(invoice: Invoice, changed: dict[str, Any]) -> None:
    """Due terms as a whole. `days_until_due` resolves to a `due_date` when given (Stripe keeps only the
    date), so the date is what both sides hold and merge."""
    days, due = changed.get("days_until_due"), changed.get("due_date")
    if days is not None and due is not None:
        raise InvalidInvoice("give one of days_until_due and due_date, not both")
    if days is not None:
        changed["due_date"] = due_from_days(days)
    elif due is not None:
        changed["days_until_due"] = None
    method = changed.get("collection_method", invoice.collection_method)
    if method == "charge_automatically":
        # Leaving send_invoice drops its due terms, unless the request set them (then it is refused).
        if days is not None or due is not None:
            raise InvalidInvoice("days_until_due and due_date apply only to collection_method send_invoice")
        for key in ("days_until_due", "due_date"):
            if getattr(invoice, key) is not None:
                changed[key] = None
    elif changed.get("due_date", invoice.due_date) is None:
        raise InvalidInvoice("send_invoice needs days_until_due or due_date")
    for key in ("days_until_due", "due_date"):
        if key in changed and getattr(invoice, key) == changed[key]:
            del changed[key]


def due_from_days(days: int) -> date:
    return datetime.now(UTC).date() + timedelta(days=days)


def _plan_lines(invoice: Invoice, entries: list[LineIn]) -> list[InvoiceLine] | None:
    """The new list of lines, keeping line identities; None when it equals the current list.

    Entries with an `id` keep that line; without ids, entries keep the line at their position, so an
    edit of one line stays an edit of one line on the other side.
    """
    current = list(invoice.lines)
    by_id = {line.id: line for line in current}
    ids = [e.id for e in entries if e.id is not None]
    if ids:
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise InvalidInvoice(f"lines {unknown[:5]} are not lines of invoice {invoice.id}")
        if len(set(ids)) != len(ids):
            raise InvalidInvoice("a line id appears more than once")
    planned: list[InvoiceLine] = []
    edited = False
    for position, entry in enumerate(entries):
        if ids:
            line = by_id[entry.id] if entry.id is not None else None
        else:
            line = current[position] if position < len(current) else None
        if line is None:
            planned.append(_new_line(position, entry))
            continue
        values = {"position": position, "description": entry.description, "quantity": entry.quantity,
                  "unit_amount": entry.unit_amount, "amount": entry.quantity * entry.unit_amount}
        if any(getattr(line, k) != v for k, v in values.items()):
            for key, value in values.items():
                setattr(line, key, value)
            line.updated_at = func.now()  # type: ignore[assignment]
            edited = True
        planned.append(line)
    same = not edited and [line.id for line in planned] == [line.id for line in current]
    return None if same else planned


def _new_line(position: int, entry: LineIn) -> InvoiceLine:
    return InvoiceLine(position=position, description=entry.description, quantity=entry.quantity, tagged=True,
                       unit_amount=entry.unit_amount, amount=entry.quantity * entry.unit_amount)


def _retotal(invoice: Invoice) -> None:
    """Our estimate while a draft; the external system's totals replace it when it reports them."""
    total = sum(line.amount for line in invoice.lines)
    invoice.subtotal = invoice.total = invoice.amount_due = total


async def customer_delete_refusal(session: AsyncSession, customer_id: int) -> str | None:
    """Why a customer cannot be deleted now (it has invoices that are not settled), or None.

    Called with the customer's row locked for update, so no invoice for it is created meanwhile.
    """
    unsettled = await InvoiceRepository(session).unsettled_of(customer_id)
    if not unsettled:
        return None
    counts = ", ".join(f"{n} {status}" for status, n in sorted(unsettled.items()))
    return (f"customer {customer_id} has invoices that are not paid or void ({counts}): "
            "delete its drafts and void or settle the rest first")
