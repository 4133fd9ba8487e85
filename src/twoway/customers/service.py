"""Customer writes: the generic record writes, for the `customer` kind."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from twoway.customers.models import Customer
from twoway.customers.repository import CustomerRepository
from twoway.kit import records

KIND = "customer"


class CustomerNotFound(LookupError):
    pass


async def create(session: AsyncSession, fields: dict[str, str]) -> Customer:
    customer: Customer = await records.create(session, KIND, fields)
    return customer


async def update(session: AsyncSession, customer: Customer, changes: dict[str, str]) -> bool:
    return await records.update(session, KIND, customer, changes)


async def soft_delete(session: AsyncSession, customer: Customer) -> bool:
    return await records.soft_delete(session, KIND, customer)


async def get_live(session: AsyncSession, customer_id: int, *, for_update: bool = False) -> Customer:
    customer = await CustomerRepository(session).get(customer_id, for_update=for_update)
    if customer is None or customer.deleted_at is not None:
        raise CustomerNotFound(customer_id)
    return customer
