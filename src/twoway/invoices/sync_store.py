"""How the sync engine reads and writes invoices: their synced fields as text (see `wire`), lines included.

An invoice is not one row of plain columns (its lines are rows of their own, its status is where it is
headed and where Stripe has confirmed it), so the kind brings its own reads and writes. Writes are
conditional on the version the engine read, and bump it, as the engine's own statements do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.invoices import wire
from twoway.invoices.models import RANK, TERMINAL, Invoice, InvoiceLine
from twoway.kit import records


@dataclass(frozen=True)
class SyncRow:
    """What the engine reads of a record: its bookkeeping, and each synced field as an attribute."""

    id: int
    version: int
    updated_at: datetime | None
    deleted_at: datetime | None
    fields: dict[str, str]
    uid: str | None = None

    def __getattr__(self, name: str) -> str:
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None


def synced_fields(invoice: Invoice) -> dict[str, str]:
    lines = [{"id": line.id if line.tagged else None, "description": line.description,
              "quantity": line.quantity, "unit_amount": line.unit_amount} for line in invoice.lines]
    return {
        "customer_id": str(invoice.customer_id),
        "currency": invoice.currency,
        "collection_method": invoice.collection_method,
        "due_date": invoice.due_date.isoformat() if invoice.due_date else "",
        "description": invoice.description,
        "lines": wire.encode_lines(lines),
        "status": invoice.effective_status,
        "confirmed_status": invoice.status,
        "number": invoice.number or "",
        **{k: str(getattr(invoice, k)) for k in wire.AMOUNTS},
        "hosted_invoice_url": invoice.hosted_invoice_url or "",
    }


class InvoiceStore:
    """The `RecordStore` of the invoice kind (see `twoway.kit.records`): one invoice at a time, through the
    ORM (an invoice's lines are rows of their own)."""

    async def read(self, session: AsyncSession, kind: records.Kind, ids: Sequence[int]) -> list[SyncRow]:
        return await read(session, ids)

    async def write(self, session: AsyncSession, kind: records.Kind, edits: Sequence[records.Edit]) -> set[int]:
        return {e.id for e in edits if await write(session, e)}

    async def insert(self, session: AsyncSession, kind: records.Kind, rows: Sequence[records.New]) -> None:
        for row in rows:
            await insert(session, row)


async def read(session: AsyncSession, ids: Sequence[int]) -> list[SyncRow]:
    if not ids:
        return []
    stmt = select(Invoice).where(Invoice.id.in_(list(ids))).execution_options(populate_existing=True)
    rows = (await session.execute(stmt)).scalars().all()
    return [SyncRow(i.id, i.version, i.updated_at, i.deleted_at, synced_fields(i), str(i.uid)) for i in rows]


async def write(session: AsyncSession, edit: records.Edit) -> bool:
    """Apply merged values; False (nothing written) when the row moved past the version read."""
    invoice = (await session.execute(
        select(Invoice).where(Invoice.id == edit.id).with_for_update(of=Invoice)
        .execution_options(populate_existing=True))).scalar_one_or_none()
    if invoice is None or invoice.version != edit.expected_version:
        return False
    apply(invoice, edit.fields, free=await _free_line_ids(session, invoice, edit.fields))
    if edit.delete and invoice.deleted_at is None:
        invoice.deleted_at = func.now()  # type: ignore[assignment]
    elif edit.restore:
        invoice.deleted_at = None
    records.bump(invoice)
    await session.flush()
    return True


async def insert(session: AsyncSession, row: records.New) -> None:
    """An invoice made over there, imported with its lines (kept as they have it)."""
    fields = row.fields
    invoice = Invoice(id=row.id, customer_id=int(fields["customer_id"]), currency=fields.get("currency", ""),
                      collection_method=fields.get("collection_method") or "charge_automatically",
                      description=fields.get("description", ""), status="draft", version=1, lines=[],
                      **({"uid": UUID(row.uid)} if row.uid else {}))
    apply(invoice, {k: v for k, v in fields.items() if k not in ("customer_id",)}, fresh=True,
          free=await _free_line_ids(session, invoice, fields))
    if row.deleted:
        invoice.deleted_at = func.now()  # type: ignore[assignment]
    session.add(invoice)
    await session.flush()


async def _free_line_ids(session: AsyncSession, invoice: Invoice, changes: Mapping[str, str]) -> set[int]:
    """Ids of ours on the other side's lines that no line holds now: a line of ours removed here that is
    still there (Stripe froze the invoice before our removal got to it) comes back under its own id."""
    if "lines" not in changes:
        return set()
    mine = {line.id for line in invoice.lines}
    wanted = {e["id"] for e in wire.decode_lines(changes["lines"]) if e["id"] is not None} - mine
    if not wanted:
        return set()
    held = (await session.execute(select(InvoiceLine.id).where(InvoiceLine.id.in_(wanted)))).scalars().all()
    return wanted - set(held)


def apply(invoice: Invoice, changes: Mapping[str, str], *, fresh: bool = False,
          free: set[int] | frozenset[int] = frozenset()) -> None:
    for name in ("currency", "collection_method", "description"):
        if name in changes:
            setattr(invoice, name, changes[name])
    if changes.get("customer_id"):
        invoice.customer_id = int(changes["customer_id"])
    if "due_date" in changes:
        due = date.fromisoformat(changes["due_date"]) if changes["due_date"] else None
        if due != invoice.due_date:
            invoice.due_date = due
            invoice.days_until_due = None  # the term we were given no longer describes the date
    if "lines" in changes:
        _apply_lines(invoice, wire.decode_lines(changes["lines"]), fresh=fresh, free=free)
    for name in wire.AMOUNTS:
        if name in changes:
            setattr(invoice, name, int(changes[name] or 0))
    if "number" in changes:
        invoice.number = changes["number"] or None
    if "hosted_invoice_url" in changes:
        invoice.hosted_invoice_url = changes["hosted_invoice_url"] or None
    _apply_status(invoice, changes.get("confirmed_status"), changes.get("status"))


def _apply_status(invoice: Invoice, confirmed: str | None, merged: str | None) -> None:
    """Stripe's confirmation moves `status`; a pending command it reached (or a terminal passed) is done."""
    if confirmed in RANK:
        invoice.status = confirmed
    if merged in RANK and merged != invoice.status and RANK[merged] > RANK[invoice.status]:
        invoice.requested_status = merged  # headed there, not yet confirmed
    requested = invoice.requested_status
    if requested is not None and (invoice.status in TERMINAL or RANK[invoice.status] >= RANK[requested]):
        invoice.requested_status = None


def _apply_lines(invoice: Invoice, entries: list[dict[str, Any]], *, fresh: bool,
                 free: set[int] | frozenset[int] = frozenset()) -> None:
    """The other side's lines. Ours by id keep their place; one with an id of ours that no line holds
    (`free`: removed here meanwhile) is made again under that id, so both sides keep naming it alike; a
    line without our id (made over there) is matched to an untagged line of ours by content, else by
    order, else it is new; missing ones go."""
    current = [] if fresh else list(invoice.lines)
    by_id = {line.id: line for line in current if line.tagged}
    untagged = [line for line in current if not line.tagged]
    kept: list[InvoiceLine] = []
    added: list[InvoiceLine] = []
    loose: list[dict[str, Any]] = []
    for entry in entries:
        line = by_id.pop(entry["id"], None) if entry["id"] is not None else None
        if line is not None:
            _set_line(line, entry)
            kept.append(line)
        elif entry["id"] in free:
            line = InvoiceLine(id=entry["id"], tagged=True)
            _set_line(line, entry)
            added.append(line)
        else:
            loose.append(entry)
    unmatched = []
    for entry in loose:
        same = next((line for line in untagged if _same(line, entry)), None)
        if same is not None:
            untagged.remove(same)
            kept.append(same)
        else:
            unmatched.append(entry)
    for entry in unmatched:
        if untagged:
            line = untagged.pop(0)
            _set_line(line, entry)
            kept.append(line)
        else:
            line = InvoiceLine(tagged=False)
            _set_line(line, entry)
            added.append(line)
    kept.sort(key=lambda line: line.position)
    ordered = kept + added
    for position, line in enumerate(ordered):
        if line.position != position:
            line.position = position
    invoice.lines = ordered


def _same(line: InvoiceLine, entry: dict[str, Any]) -> bool:
    return (line.description, line.quantity, line.unit_amount) == (
        entry["description"], entry["quantity"], entry["unit_amount"])


def _set_line(line: InvoiceLine, entry: dict[str, Any]) -> None:
    values = {"description": entry["description"], "quantity": entry["quantity"],
              "unit_amount": entry["unit_amount"], "amount": entry["quantity"] * entry["unit_amount"]}
    if any(getattr(line, k) != v for k, v in values.items()):
        for key, value in values.items():
            setattr(line, key, value)
        if line.id is not None:
            line.updated_at = func.now()  # type: ignore[assignment]
