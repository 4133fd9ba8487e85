"""The transactional outbox: a change and its message commit together or not at all.

This module owns the outbox's insert: the session form (`enqueue`, any number of messages in one
statement) and the fragments the plain-asyncpg group commits build their statements from
(`queue_outbound`, `queue_inbound`, `NOTIFY`), so every message has one shape wherever it is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

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


class Message(NamedTuple):
    topic: str
    key: str
    payload: dict[str, Any]


def record_key(kind: str, internal_id: int) -> str:
    return f"{kind}:{internal_id}"


def outbound(kind: str, internal_id: int, reason: str = "change") -> Message:
    """Make every system hold what our row holds now."""
    return Message(OUTBOUND_TOPIC, record_key(kind, internal_id), {"kind": kind, "id": internal_id, "reason": reason})


def inbound(system: str, kind: str, external_id: str, event_id: str | None = None, **extra: Any) -> Message:
    """Take in what `system` holds of the object now."""
    return Message(INBOUND_TOPIC, f"{system}:{kind}:{external_id}",
                   {"system": system, "kind": kind, "external_id": external_id, "event_id": event_id, **extra})


# Transactional: heard only if the transaction commits; PostgreSQL folds a transaction's identical
# notifications into one.
NOTIFY = f"pg_notify('{NOTIFY_CHANNEL}', '')"


def _insert(select: str) -> str:
    """The one insert into the outbox: rows of (topic, key, payload) from `select`."""
    return f"INSERT INTO outbox (topic, key, payload) {select} RETURNING 1"


def queue_outbound(kind: str, rows: str) -> str:
    """For a statement's CTE: the `outbound` message of each row of `rows` (a CTE with an `id`)."""
    return _insert(f"SELECT '{OUTBOUND_TOPIC}', '{kind}:' || id, "
                   f"jsonb_build_object('kind', '{kind}', 'id', id, 'reason', 'change') FROM {rows}")


def queue_inbound(rows: str) -> str:
    """For a statement's CTE: the `inbound` message of each row of `rows` (system, kind, external_id, event_id)."""
    return _insert(f"SELECT '{INBOUND_TOPIC}', system || ':' || kind || ':' || external_id, "
                   "jsonb_build_object('system', system, 'kind', kind, 'external_id', external_id, "
                   f"'event_id', event_id) FROM {rows}")


# One round trip for any number of messages, and one NOTIFY.
ENQUEUE = text(f"""
    WITH queued AS ({_insert('''SELECT v.t, v.k, CAST(v.p AS jsonb)
        FROM unnest(CAST(:topics AS text[]), CAST(:keys AS text[]), CAST(:payloads AS text[])) AS v(t, k, p)''')})
    SELECT {NOTIFY} FROM queued LIMIT 1""")


async def enqueue(session: AsyncSession, messages: Iterable[Message]) -> None:
    """Add messages through the caller's transaction; the relay publishes them after commit."""
    batch = list(messages)
    if batch:
        await session.execute(ENQUEUE, {"topics": [m.topic for m in batch], "keys": [m.key for m in batch],
                                         "payloads": [json.dumps(m.payload) for m in batch]})


async def enqueue_outbound(session: AsyncSession, kind: str, internal_id: int, reason: str = "change") -> None:
    await enqueue(session, [outbound(kind, internal_id, reason)])


async def enqueue_inbound(session: AsyncSession, system: str, kind: str, external_id: str,
                          event_id: str | None = None) -> None:
    await enqueue(session, [inbound(system, kind, external_id, event_id)])
