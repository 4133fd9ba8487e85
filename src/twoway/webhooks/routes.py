"""Thin webhook endpoint: verify, store, 2xx. Never a 5xx for a business reason."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.connectors.base import Connector, WebhookRejected
from twoway.kit.deps import db_session
from twoway.kit.errors import error_response
from twoway.ops import metrics
from twoway.webhooks.service import record_rejection, store_event

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])


def _connector(request: Request, system: str) -> Connector | None:
    connectors: dict[str, Connector] = request.app.state.webhook_connectors
    return connectors.get(system)


@router.post("/{system}")
async def receive(system: str, request: Request,
                  session: Annotated[AsyncSession, Depends(db_session)]) -> JSONResponse:
    connector = _connector(request, system)
    if connector is None:
        return error_response(404, "not_found", f"no connector named {system!r}")
    body = await request.body()
    try:
        event = connector.verify_webhook(body, request.headers)
    except WebhookRejected as exc:
        reason = str(exc)
        record_rejection(session, system, reason, body, request.client.host if request.client else None)
        await session.commit()
        metrics.WEBHOOKS_REJECTED.labels(system=system, reason=reason).inc()
        return error_response(400, "webhook_rejected", reason)
    if event is None:
        metrics.WEBHOOKS_RECEIVED.labels(system=system, result="ignored").inc()
        return JSONResponse({"received": True, "ignored": True})
    new = await store_event(session, system, event, source="webhook")
    await session.commit()
    metrics.WEBHOOKS_RECEIVED.labels(system=system, result="stored" if new else "duplicate").inc()
    return JSONResponse({"received": True, "duplicate": not new})
