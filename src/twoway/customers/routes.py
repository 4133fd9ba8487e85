from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import ValidationError
from starlette.types import Scope

from twoway.customers import service, writes
from twoway.customers.models import CUSTOMER
from twoway.customers.repository import CustomerRepository
from twoway.customers.schemas import CustomerCreate, CustomerOut, CustomerPage, CustomerUpdate
from twoway.invoices.service import customer_delete_refusal
from twoway.kit import idempotency
from twoway.kit.auth import key_matches
from twoway.kit.deps import RecordId, Session, idempotency_key
from twoway.kit.groupcommit import GroupCommit
from twoway.syncstate import view as sync_state

router = APIRouter(prefix="/api/v1/customers", tags=["customers"])
CustomerId = RecordId
IdempotencyKey = Annotated[str | None, idempotency_key("customer")]


def _not_found(customer_id: int) -> HTTPException:
    return HTTPException(404, f"customer {customer_id} not found")


def _json(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


@router.post("", status_code=201, response_model=CustomerOut)
async def create_customer(body: CustomerCreate, request: Request,
                          idempotency_key: IdempotencyKey = None) -> Response:
    """Answered once the customer (and its outbox message) is durable; concurrent creates share a commit."""
    pool = request.app.state.pool
    item = writes.Create(name=body.name, email=str(body.email))
    if idempotency_key is not None:
        fingerprint = idempotency.request_hash("POST", request.url.path, body.model_dump_json().encode())
        stored = await _replay(pool, idempotency_key, fingerprint)
        if stored is not None:
            return stored
        item = writes.Create(name=item.name, email=item.email, key=idempotency_key, request_hash=fingerprint)
    writer: GroupCommit[writes.Create, writes.Created] = request.app.state.customer_writer
    created = await writer.submit(item)
    if created.body is None:  # the same key won in a concurrent request: its answer is ours
        assert idempotency_key is not None
        stored = await _replay(pool, idempotency_key, item.request_hash)
        if stored is None:
            raise HTTPException(409, "a request with this Idempotency-Key is still in progress; retry")
        return stored
    return _json(created.body, 201)


async def fast_create(scope: Scope, body: bytes, headers: dict[str, str]) -> Response | None:
    """The plain case of `create_customer` (kit/hotpath.py): JSON body, valid key and input, no Idempotency-Key.
    Anything else goes on to the route above, which gives FastAPI's own answers."""
    if headers.get("content-type") != "application/json" or "idempotency-key" in headers:
        return None
    state = scope["app"].state
    if state.api_keys:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or not key_matches(token.strip(), state.api_keys):
            return None
    try:
        valid = CustomerCreate.model_validate_json(body)
    except ValidationError:
        return None
    writer: GroupCommit[writes.Create, writes.Created] = state.customer_writer
    created = await writer.submit(writes.Create(name=valid.name, email=str(valid.email)))
    assert created.body is not None  # no key, so never a replay
    return _json(created.body, 201)


async def _replay(pool: object, key: str, fingerprint: str) -> Response | None:
    stored = await idempotency.lookup(pool, key)  # type: ignore[arg-type]
    if stored is None:
        return None
    if stored.request_hash != fingerprint:
        raise HTTPException(400, "this Idempotency-Key was used with different parameters; use a new key")
    return _json(stored.response, stored.status, {"Idempotent-Replayed": "true"})


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
async def get_customer(customer_id: CustomerId, request: Request) -> Response:
    """A deleted customer is still readable, with `deleted_at` set."""
    row = await request.app.state.pool.fetchrow(writes.GET, customer_id)
    if row is None:
        raise _not_found(customer_id)
    return _json(writes.render(row))


@router.patch("/{customer_id}", response_model=CustomerOut)
async def update_customer(customer_id: CustomerId, body: CustomerUpdate, request: Request) -> Response:
    answer = await writes.update(request.app.state.pool, customer_id, body.model_dump(exclude_none=True))
    if answer is None:
        raise _not_found(customer_id)
    return _json(answer)


@router.delete("/{customer_id}", status_code=204)
async def delete_customer(customer_id: CustomerId, session: Session) -> Response:
    """Rare, and it must see the customer's invoices: one ORM transaction of its own."""
    customer = await CustomerRepository(session).get(customer_id, for_update=True)
    if customer is None:
        raise _not_found(customer_id)
    refusal = await customer_delete_refusal(session, customer_id) if customer.deleted_at is None else None
    if refusal:
        raise HTTPException(409, refusal)
    await service.soft_delete(session, customer)
    await session.commit()
    return Response(status_code=204)


@router.get("/{customer_id}/sync")
async def customer_sync(customer_id: CustomerId, session: Session) -> dict[str, Any]:
    if await CustomerRepository(session).get(customer_id) is None:
        raise _not_found(customer_id)
    return await sync_state.of(session, CUSTOMER, customer_id)
