"""Thin webhook endpoint: verify the raw body, store by group commit, answer once durable.

A rejection is counted (and maybe sampled) and answered 400 with its reason; nothing else changes.
A database that cannot be reached is a 503 with Retry-After (the sender retries; the inbox dedups).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

from twoway.connectors.base import Connector, WebhookRejected
from twoway.kit import metrics
from twoway.kit.groupcommit import GroupCommit
from twoway.webhooks.ingest import Event
from twoway.webhooks.rejections import RejectionLog

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

STORED = b'{"received":true,"duplicate":false}'
DUPLICATE = b'{"received":true,"duplicate":true}'
IGNORED = b'{"received":true,"ignored":true}'


def _connector(request: Request, system: str) -> Connector:
    connectors: dict[str, Connector] = request.app.state.webhook_connectors
    if system not in connectors:
        raise HTTPException(404, f"no connector named {system!r}")
    return connectors[system]


@router.post("/{system}", response_model=dict[str, bool])
async def receive(system: str, request: Request) -> Response:
    connector = _connector(request, system)
    body = await request.body()
    try:
        event = connector.verify_webhook(body, request.headers)
    except WebhookRejected as exc:
        reason = str(exc)
        rejections: RejectionLog = request.app.state.webhook_rejections
        await rejections.record(system, reason, body, request.client.host if request.client else None)
        metrics.WEBHOOKS_REJECTED.labels(system=system, reason=reason).inc()
        raise HTTPException(400, reason)
    if event is None:
        metrics.WEBHOOKS_RECEIVED.labels(system=system, result="ignored").inc()
        return Response(IGNORED, media_type="application/json")
    writer: GroupCommit[Event, bool] = request.app.state.inbox_writer
    new = await writer.submit(Event(system=system, event_id=event.event_id, type=event.type, kind=event.kind,
                                    external_id=event.external_id, created=event.created,
                                    payload=body.decode("utf-8")))
    metrics.WEBHOOKS_RECEIVED.labels(system=system, result="stored" if new else "duplicate").inc()
    return Response(STORED if new else DUPLICATE, media_type="application/json")
