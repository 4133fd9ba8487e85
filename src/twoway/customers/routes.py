from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.customers import service
from twoway.customers.repository import CustomerRepository
from twoway.customers.schemas import CustomerCreate, CustomerOut, CustomerPage, CustomerUpdate
from twoway.invoices.service import customer_delete_refusal
from twoway.kit.deps import db_session

router = APIRouter(prefix="/api/v1/customers", tags=["customers"])
Session = Annotated[AsyncSession, Depends(db_session)]
# Ids are positive BIGINTs; anything else is a 422 before it reaches the database.
CustomerId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _not_found(customer_id: int) -> HTTPException:
    return HTTPException(404, f"customer {customer_id} not found")


@router.post("", status_code=201, response_model=CustomerOut)
async def create_customer(body: CustomerCreate, session: Session) -> CustomerOut:
    customer = await service.create(session, body.model_dump())
    await session.commit()
    return CustomerOut.model_validate(customer)


@router.get("", response_model=CustomerPage)
async def list_customers(
    session: Session,
    cursor: Annotated[str | None, Query(max_length=40, pattern=r"^\d+$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    # PostgreSQL text cannot hold NUL: a 422 here, not a 500 from the driver.
    email: Annotated[str | None, Query(max_length=512, pattern=r"^[^\x00]*$")] = None,
    include_deleted: bool = False,
) -> CustomerPage:
    after = int(cursor) if cursor else None
    if after is not None and after >= 2**63:  # past every BIGINT id: an empty page, not an overflow 500
        return CustomerPage(data=[], has_more=False, next_cursor=None)
    rows = await CustomerRepository(session).list(
        after=after, limit=limit + 1, email=email, include_deleted=include_deleted
    )
    page = [CustomerOut.model_validate(c) for c in rows[:limit]]
    has_more = len(rows) > limit
    return CustomerPage(data=page, has_more=has_more, next_cursor=str(page[-1].id) if has_more else None)


@router.get("/{customer_id}", response_model=CustomerOut)
async def get_customer(customer_id: CustomerId, session: Session) -> CustomerOut:
    """A deleted customer is still readable, with `deleted_at` set."""
    customer = await CustomerRepository(session).get(customer_id)
    if customer is None:
        raise _not_found(customer_id)
    return CustomerOut.model_validate(customer)


@router.patch("/{customer_id}", response_model=CustomerOut)
async def update_customer(customer_id: CustomerId, body: CustomerUpdate, session: Session) -> CustomerOut:
    try:
        customer = await service.get_live(session, customer_id, for_update=True)
    except service.CustomerNotFound:
        customer = None
    if customer is None:
        raise _not_found(customer_id)
    await service.update(session, customer, body.model_dump(exclude_none=True))
    await session.commit()
    return CustomerOut.model_validate(customer)


@router.delete("/{customer_id}", status_code=204)
async def delete_customer(customer_id: CustomerId, session: Session) -> Response:
    customer = await CustomerRepository(session).get(customer_id, for_update=True)
    if customer is None:
        raise _not_found(customer_id)
    refusal = await customer_delete_refusal(session, customer_id) if customer.deleted_at is None else None
    if refusal:
        raise HTTPException(409, refusal)
    await service.soft_delete(session, customer)
    await session.commit()
    return Response(status_code=204)
