"""Storing verified events: an inbox insert that ignores a duplicate event id, plus its outbox row."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.connectors.base import InboundEvent
from twoway.kit.outbox import enqueue_inbound
from twoway.sync.models import WebhookRejection

INSERT = text("""
    INSERT INTO inbox (system, event_id, event_type, kind, external_id, source, event_created, payload)
    VALUES (:system, :event_id, :type, :kind, :external_id, :source, :created, CAST(:payload AS jsonb))
    ON CONFLICT (system, event_id) DO NOTHING
    RETURNING id
""")


async def store_event(session: AsyncSession, system: str, event: InboundEvent, *, source: str) -> bool:
    """True when the event is new. A duplicate (a retry, or the poller's copy) changes nothing."""
    inserted = (await session.execute(INSERT, {
        "system": system, "event_id": event.event_id, "type": event.type, "kind": event.kind,
        "external_id": event.external_id, "source": source, "created": event.created,
        "payload": json.dumps(event.payload),
    })).first()
    if inserted is None:
        return False
    await enqueue_inbound(session, system, event.kind, event.external_id, event.event_id)
    return True


def record_rejection(session: AsyncSession, system: str, reason: str, body: bytes, remote: str | None) -> None:
    session.add(WebhookRejection(system=system, reason=reason[:500], body_size=len(body),
                                 body_sha256=hashlib.sha256(body).hexdigest(), remote_addr=remote))
