from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.invoices import service
from twoway.invoices.kind import INVOICE
from twoway.invoices.repository import InvoiceRepository
from twoway.invoices.schemas import InvoiceCreate, InvoiceOut, InvoicePage, InvoiceUpdate, Status
from twoway.kit import errors, idempotency
from twoway.kit.deps import RecordId, Session, idempotency_key
from twoway.syncstate import view as sync_state

router = APIRouter(prefix="/api/v1/invoices", tags=["invoices"])
InvoiceId = RecordId
IdempotencyKey = Annotated[str | None, idempotency_key("invoice")]
Command = Literal["finalize", "void", "mark_uncollectible", "pay"]
REFUSED = errors.documented(409)
UNCHANGED: dict[int | str, dict[str, Any]] = {
    200: {"model": InvoiceOut, "description": "Already there: nothing changed"}}


def _not_found(invoice_id: int) -> HTTPException:
    return HTTPException(404, f"invoice {invoice_id} not found")


def _out(invoice: Any) -> InvoiceOut:
    return InvoiceOut.model_validate(invoice)


@router.post("", status_code=201, response_model=InvoiceOut)
async def create_invoice(body: InvoiceCreate, request: Request, session: Session,
                         idempotency_key: IdempotencyKey = None) -> Response:
    """A draft with its lines. With an `Idempotency-Key`, a retry gets the first answer (as for customers)."""
    fingerprint = ""
    if idempotency_key is not None:
        fingerprint = idempotency.request_hash("POST", request.url.path, body.model_dump_json().encode())
        if not await idempotency.claim_in(session, idempotency_key, fingerprint, 201):
            await session.rollback()
            return await _replay(session, idempotency_key, fingerprint)
    try:
        invoice = await service.create(session, body)
    except service.InvalidInvoice as exc:
        raise HTTPException(422, str(exc))  # the session is rolled back: the key stays free
    answer = _out(invoice).model_dump_json()
    if idempotency_key is not None:
        await idempotency.answer_in(session, idempotency_key, answer)
    await session.commit()
    return Response(answer, status_code=201, media_type="application/json")


async def _replay(session: AsyncSession, key: str, fingerprint: str) -> Response:
    stored = await idempotency.lookup_in(session, key)
    if stored is None or not stored.response:  # claimed by a request that has not answered yet
        raise HTTPException(409, "a request with this Idempotency-Key is still in progress; retry")
    if stored.request_hash != fingerprint:
        raise HTTPException(400, "this Idempotency-Key was used with different parameters; use a new key")
    return Response(stored.response, status_code=stored.status, media_type="application/json",
                    headers={"Idempotent-Replayed": "true"})


@router.get("", response_model=InvoicePage)
async def list_invoices(
    session: Session,
    cursor: Annotated[str | None, Query(max_length=40, pattern=r"^\d+$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    customer_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    status: Status | None = None,
    include_deleted: bool = False,
) -> InvoicePage:
    after = int(cursor) if cursor else None
    if after is not None and after >= 2**63:  # past every BIGINT id: an empty page, not an overflow 500
        return InvoicePage(data=[], has_more=False, next_cursor=None)
    rows = await InvoiceRepository(session).list(after=after, limit=limit + 1, customer_id=customer_id,
                                                 status=status, include_deleted=include_deleted)
    page = [_out(i) for i in rows[:limit]]
    has_more = len(rows) > limit
    return InvoicePage(data=page, has_more=has_more, next_cursor=str(page[-1].id) if has_more else None)


@router.get("/{invoice_id}", response_model=InvoiceOut)
async def get_invoice(invoice_id: InvoiceId, session: Session) -> InvoiceOut:
    """A deleted draft is still readable, with `deleted_at` set."""
    invoice = await InvoiceRepository(session).get(invoice_id)
    if invoice is None:
        raise _not_found(invoice_id)
    return _out(invoice)


@router.patch("/{invoice_id}", response_model=InvoiceOut, responses=REFUSED)
async def update_invoice(invoice_id: InvoiceId, body: InvoiceUpdate, session: Session) -> InvoiceOut:
    invoice = await _live(session, invoice_id)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    try:
        await service.update(session, invoice, changes)
    except service.InvalidInvoice as exc:
        raise HTTPException(422, str(exc))
    except service.Refused as exc:
        raise HTTPException(409, str(exc))
    await session.commit()
    return _out(invoice)


@router.delete("/{invoice_id}", status_code=204, response_model=None, responses={202: {
    "model": InvoiceOut, "description": "Finalized: it cannot be deleted, so it is being voided"}, **REFUSED})
async def delete_invoice(invoice_id: InvoiceId, request: Request, session: Session) -> Response:
    """A draft is deleted (204). A finalized invoice cannot be: the delete becomes a void (202, recorded)."""
    invoice = await InvoiceRepository(session).get(invoice_id, for_update=True)
    if invoice is None:
        raise _not_found(invoice_id)
    try:
        outcome = await service.delete(session, invoice, confirm_locally=not _synced_elsewhere(request))
    except service.Refused as exc:
        raise HTTPException(409, str(exc))
    await session.commit()
    if outcome == "voided":
        return JSONResponse(_out(invoice).model_dump(mode="json"), status_code=202)
    return Response(status_code=204)


@router.post("/{invoice_id}/{command}", status_code=202, response_model=InvoiceOut,
             responses={**UNCHANGED, **REFUSED})
async def invoice_command(invoice_id: InvoiceId, command: Command, request: Request, session: Session,
                          response: Response) -> InvoiceOut:
    """finalize | void | mark_uncollectible | pay (paid out of band). 202: asked of the external system,
    whose confirmation moves `status` (`requested_status` shows the way); 200: nothing to do."""
    invoice = await _live(session, invoice_id)
    try:
        accepted = await service.command(session, invoice, command,
                                         confirm_locally=not _synced_elsewhere(request))
    except service.Refused as exc:
        raise HTTPException(409, str(exc))
    await session.commit()
    response.status_code = 202 if accepted else 200
    return _out(invoice)


@router.get("/{invoice_id}/sync")
async def invoice_sync(invoice_id: InvoiceId, session: Session) -> dict[str, Any]:
    if await InvoiceRepository(session).get(invoice_id) is None:
        raise _not_found(invoice_id)
    return await sync_state.of(session, INVOICE, invoice_id)


async def _live(session: AsyncSession, invoice_id: int) -> Any:
    try:
        return await service.get_live(session, invoice_id, for_update=True)
    except service.InvoiceNotFound:
        raise _not_found(invoice_id) from None


def _synced_elsewhere(request: Request) -> bool:
    """Does an external system hold invoices? Then it, not we, confirms a status."""
    connectors = getattr(request.app.state, "webhook_connectors", {}) or {}
    return any(service.KIND in c.kinds for c in connectors.values())
