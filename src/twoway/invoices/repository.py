from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.invoices.models import Invoice


class InvoiceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, invoice_id: int, *, for_update: bool = False) -> Invoice | None:
        stmt = select(Invoice).where(Invoice.id == invoice_id)
        if for_update:
            # populate_existing: a row read before the lock must not hide what the lock holder wrote.
            stmt = stmt.with_for_update(of=Invoice).execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list(self, *, after: int | None, limit: int, customer_id: int | None, status: str | None,
                   include_deleted: bool) -> Sequence[Invoice]:
        stmt = select(Invoice).order_by(Invoice.id).limit(limit)
        if after is not None:
            stmt = stmt.where(Invoice.id > after)
        if customer_id is not None:
            stmt = stmt.where(Invoice.customer_id == customer_id)
        if status is not None:
            stmt = stmt.where(Invoice.status == status)
        if not include_deleted:
            stmt = stmt.where(Invoice.deleted_at.is_(None))
        return (await self.session.execute(stmt)).scalars().all()

    async def unsettled_of(self, customer_id: int) -> dict[str, int]:
        """Live invoices of a customer not confirmed paid or void (a payment asked for and not yet
        confirmed is not settled: the invoice may not even exist over there yet), by status."""
        stmt = (select(Invoice.status, func.count()).where(
            Invoice.customer_id == customer_id, Invoice.deleted_at.is_(None),
            Invoice.status.not_in(("paid", "void"))).group_by(Invoice.status))
        return {str(s): int(n) for s, n in (await self.session.execute(stmt)).all()}


# The parent's row is share-locked while its invoice is written, so a concurrent customer delete
# (which locks it for update) either sees the invoice or happens first and is seen here.
LOCK_CUSTOMER = text("SELECT deleted_at IS NULL FROM customers WHERE id = :id FOR SHARE")
