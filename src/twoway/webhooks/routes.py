"""Thin webhook endpoint: verify (a dependency), store, 2xx. Never a 5xx for a business reason."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.connectors.base import Connector, InboundEvent, WebhookRejected
from twoway.kit import metrics
from twoway.kit.deps import db_session
from twoway.webhooks.service import record_rejection, store_event

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])
Session = Annotated[AsyncSession, Depends(db_session)]


def _connector(request: Request, system: str) -> Connector:
    connectors: dict[str, Connector] = request.app.state.webhook_connectors
    if system not in connectors:
        raise HTTPException(404, f"no connector named {system!r}")
    return connectors[system]


async def verified_event(system: str, request: Request, session: Session) -> InboundEvent | None:
    """The verified event (None for a type we do not sync). A rejection is recorded, then answered 400."""
    connector = _connector(request, system)
    body = await request.body()
    try:
        return connector.verify_webhook(body, request.headers)
    except WebhookRejected as exc:
        reason = str(exc)
        record_rejection(session, system, reason, body, request.client.host if request.client else None)
        await session.commit()
        metrics.WEBHOOKS_REJECTED.labels(system=system, reason=reason).inc()
        raise HTTPException(400, reason)


@router.post("/{system}")
async def receive(system: str, event: Annotated[InboundEvent | None, Depends(verified_event)],
                  session: Session) -> dict[str, bool]:
    if event is None:
        metrics.WEBHOOKS_RECEIVED.labels(system=system, result="ignored").inc()
        return {"received": True, "ignored": True}
    new = await store_event(session, system, event, source="webhook")
    await session.commit()
    metrics.WEBHOOKS_RECEIVED.labels(system=system, result="stored" if new else "duplicate").inc()
    return {"received": True, "duplicate": not new}
