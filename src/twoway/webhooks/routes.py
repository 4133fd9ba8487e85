"""Thin webhook endpoint: verify the raw body, store by group commit, answer once durable.

A rejection is counted (and maybe sampled) and answered 400 with its reason; nothing else changes.
A database that cannot be reached is a 503 with Retry-After (the sender retries; the inbox dedups).
`fast_receive` serves the same answers as the FastAPI route without FastAPI's per-request machinery
(kit/hotpath.py); the route stays for the OpenAPI document and whatever the fast path passes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.types import Scope

from twoway.connectors.base import Connector, WebhookRejected
from twoway.kit import errors, metrics
from twoway.kit.groupcommit import GroupCommit
from twoway.webhooks.ingest import Event
from twoway.webhooks.rejections import RejectionLog

PREFIX = "/api/v1/webhooks/"
router = APIRouter(prefix=PREFIX.rstrip("/"), tags=["webhooks"])

STORED = b'{"received":true,"duplicate":false}'
DUPLICATE = b'{"received":true,"duplicate":true}'
IGNORED = b'{"received":true,"ignored":true}'


async def handle(state: Any, connector: Connector, system: str, body: bytes, headers: Mapping[str, str],
                 remote: str | None) -> Response:
    try:
        event = connector.verify_webhook(body, headers)
    except WebhookRejected as exc:
        reason = str(exc)
        rejections: RejectionLog = state.webhook_rejections
        await rejections.record(system, reason, body, remote)
        metrics.WEBHOOKS_REJECTED.labels(system=system, reason=reason).inc()
        if rejections.delay > 0:
            await asyncio.sleep(rejections.delay)
        return errors.error_response(400, "bad_request", reason)
    if event is None:
        metrics.WEBHOOKS_RECEIVED.labels(system=system, result="ignored").inc()
        return Response(IGNORED, media_type="application/json")
    writer: GroupCommit[Event, bool] = state.inbox_writer
    new = await writer.submit(Event(system=system, event_id=event.event_id, type=event.type, kind=event.kind,
                                    external_id=event.external_id, created=event.created,
                                    payload=body.decode("utf-8")))
    metrics.WEBHOOKS_RECEIVED.labels(system=system, result="stored" if new else "duplicate").inc()
    return Response(STORED if new else DUPLICATE, media_type="application/json")


@router.post("/{system}", response_model=dict[str, bool])
async def receive(system: str, request: Request) -> Response:
    connectors: dict[str, Connector] = request.app.state.webhook_connectors
    if system not in connectors:
        raise HTTPException(404, f"no connector named {system!r}")
    return await handle(request.app.state, connectors[system], system, await request.body(), request.headers,
                        request.client.host if request.client else None)


async def fast_receive(scope: Scope, body: bytes, headers: dict[str, str]) -> Response | None:
    state = scope["app"].state
    system = scope["path"][len(PREFIX):]
    connector = state.webhook_connectors.get(system)
    if connector is None:
        return None  # FastAPI's 404 (or redirect)
    client = scope.get("client")
    return await handle(state, connector, system, body, headers, client[0] if client else None)
