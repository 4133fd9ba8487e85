from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.customers.models import Customer


class CustomerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, customer_id: int, *, for_update: bool = False) -> Customer | None:
        stmt = select(Customer).where(Customer.id == customer_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list(
        self, *, after: int | None, limit: int, email: str | None, include_deleted: bool
    ) -> Sequence[Customer]:
        stmt = select(Customer).order_by(Customer.id).limit(limit)
        if after is not None:
            stmt = stmt.where(Customer.id > after)
        if email is not None:
            stmt = stmt.where(Customer.email == email)
        if not include_deleted:
            stmt = stmt.where(Customer.deleted_at.is_(None))
        return (await self.session.execute(stmt)).scalars().all()
