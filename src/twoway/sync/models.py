"""The engine's own tables: the inbox, rejected webhooks, cursors and connector state. (Links and the sync log,
which the catalog reads and writes too, are in `twoway.syncstate.models`.)"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, Index, Integer, String, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from twoway.kit.db import Base

PROCESSED = text("processed_at IS NOT NULL")
PAYLOAD_KEPT = text("processed_at IS NOT NULL AND payload <> '{}'::jsonb")


class InboxEvent(Base):
    __tablename__ = "inbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    system: Mapped[str] = mapped_column(String(50))
    event_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(50))
    external_id: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(20))
    event_created: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("system", "event_id", name="uq_inbox_event"),
        Index("ix_inbox_unprocessed", "received_at", postgresql_where=text("processed_at IS NULL")),
        Index("ix_inbox_object", "system", "kind", "external_id"),
        # Retention (kit/retention.py): processed events by age, and those whose payload is still kept.
        Index("ix_inbox_processed", "processed_at", postgresql_where=PROCESSED),
        Index("ix_inbox_payload_kept", "processed_at", postgresql_where=PAYLOAD_KEPT),
    )


class WebhookRejection(Base):
    """A delivery that failed verification, kept with its reason (never the secret or signature)."""

    __tablename__ = "webhook_rejections"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    system: Mapped[str] = mapped_column(String(50))
    reason: Mapped[str] = mapped_column(String(500))
    body_sha256: Mapped[str | None] = mapped_column(String(64))
    body_size: Mapped[int] = mapped_column(Integer, default=0)
    remote_addr: Mapped[str | None] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Cursor(Base):
    __tablename__ = "cursors"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(String(500))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ConnectorState(Base):
    """Each connector's circuit breaker as its worker last saw it, for status and the dashboard."""

    __tablename__ = "connector_state"

    system: Mapped[str] = mapped_column(Text, primary_key=True)
    breaker: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
