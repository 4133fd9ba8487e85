"""The transactional outbox: a change and its message commit together or not at all."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, Index, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from twoway.kit.db import Base

OUTBOUND_TOPIC = "sync.outbound"
INBOUND_TOPIC = "sync.inbound"
NOTIFY_CHANNEL = "twoway_outbox"


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(400))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL")),
    )


# One round trip: the row, and a NOTIFY that is transactional (heard only if this transaction commits;
# PostgreSQL folds identical notifications of one transaction into one).
ENQUEUE = text(f"""
    WITH queued AS (INSERT INTO outbox (topic, key, payload) VALUES (:t, :k, CAST(:p AS jsonb)) RETURNING id)
    SELECT pg_notify('{NOTIFY_CHANNEL}', '') FROM queued
""")


async def enqueue(session: AsyncSession, topic: str, key: str, payload: dict[str, Any]) -> None:
    """Add a message through the caller's transaction; the relay publishes it after commit."""
    await session.execute(ENQUEUE, {"t": topic, "k": key, "p": json.dumps(payload)})


def record_key(kind: str, internal_id: int) -> str:
    return f"{kind}:{internal_id}"


async def enqueue_outbound(session: AsyncSession, kind: str, internal_id: int, reason: str = "change") -> None:
    await enqueue(session, OUTBOUND_TOPIC, record_key(kind, internal_id),
                  {"kind": kind, "id": internal_id, "reason": reason})


async def enqueue_inbound(session: AsyncSession, system: str, kind: str, external_id: str,
                          event_id: str | None = None) -> None:
    await enqueue(session, INBOUND_TOPIC, f"{system}:{kind}:{external_id}",
                  {"system": system, "kind": kind, "external_id": external_id, "event_id": event_id})
