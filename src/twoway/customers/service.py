"""Customer writes. Each one bumps the version and queues its outbox message in the same transaction."""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.customers.models import Customer
from twoway.customers.repository import CustomerRepository
from twoway.kit.outbox import enqueue_outbound

KIND = "customer"


class CustomerNotFound(LookupError):
    pass


async def create(session: AsyncSession, fields: dict[str, str]) -> Customer:
    customer = await CustomerRepository(session).add(Customer(name=fields["name"], email=fields["email"], version=1))
    await enqueue_outbound(session, KIND, customer.id)
    await session.refresh(customer)
    return customer


async def update(session: AsyncSession, customer: Customer, changes: dict[str, str]) -> bool:
    """Apply the changes that differ; returns False (and writes nothing) when none do."""
    changed = {k: v for k, v in changes.items() if getattr(customer, k) != v}
    if not changed:
        return False
    for key, value in changed.items():
        setattr(customer, key, value)
    await _bump(session, customer)
    return True


async def soft_delete(session: AsyncSession, customer: Customer) -> bool:
    if customer.deleted_at is not None:
        return False
    customer.deleted_at = func.now()  # type: ignore[assignment]
    await _bump(session, customer)
    return True


async def _bump(session: AsyncSession, customer: Customer) -> None:
    customer.version = customer.version + 1
    customer.updated_at = func.now()  # type: ignore[assignment]
    await session.flush()
    await enqueue_outbound(session, KIND, customer.id)
    await session.refresh(customer)


async def get_live(session: AsyncSession, customer_id: int, *, for_update: bool = False) -> Customer:
    customer = await CustomerRepository(session).get(customer_id, for_update=for_update)
    if customer is None or customer.deleted_at is not None:
        raise CustomerNotFound(customer_id)
    return customer
