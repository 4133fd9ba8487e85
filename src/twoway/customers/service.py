"""Customer writes through the ORM, by the one write path (`twoway.kit.records.write`). The API's hot
creates and updates are plain SQL built from the same pieces (writes.py)."""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.customers.models import Customer
from twoway.kit import records

KIND = "customer"


async def create(session: AsyncSession, fields: dict[str, str]) -> Customer:
    spec = records.kind(KIND)
    customer = Customer(**{f: fields.get(f, "") for f in spec.fields})
    await records.write(session, KIND, [customer])
    return customer


async def soft_delete(session: AsyncSession, customer: Customer) -> bool:
    if customer.deleted_at is not None:
        return False
    customer.deleted_at = func.now()  # type: ignore[assignment]
    await records.write(session, KIND, [customer])
    return True
