"""Storing one verified event through an ORM session (the Events API poller): inbox row + outbox row."""

from __future__ import annotations

import json

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.connectors.base import InboundEvent
from twoway.kit.outbox import enqueue_inbound

INSERT = text("""
    INSERT INTO inbox (system, event_id, event_type, kind, external_id, source, event_created, payload)
    VALUES (:system, :event_id, :type, :kind, :external_id, :source, :created, CAST(:payload AS jsonb))
    ON CONFLICT (system, event_id) DO NOTHING
    RETURNING id
""")


async def store_event(session: AsyncSession, system: str, event: InboundEvent, *, source: str) -> bool:
    """True when the event is new. A duplicate (a retry, or the webhook's copy) changes nothing."""
    inserted = (await session.execute(INSERT, {
        "system": system, "event_id": event.event_id, "type": event.type, "kind": event.kind,
        "external_id": event.external_id, "source": source, "created": event.created,
        "payload": json.dumps(event.payload),
    })).first()
    if inserted is None:
        return False
    await enqueue_inbound(session, system, event.kind, event.external_id, event.event_id)
    return True
