"""Where each record stands with each system: its links to external objects and the sync log.

The catalog reads these (a record's sync view) and writes one log row itself (an invoice delete mapped to a
void), and the engine keeps them: so they live below both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, Index, Integer, String, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from twoway.kit.db import Base


class Link(Base):
    """One external object per (kind, internal id, system), and one internal record per external id."""

    __tablename__ = "links"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))
    internal_id: Mapped[int] = mapped_column(BigInteger)
    system: Mapped[str] = mapped_column(String(50))
    external_id: Mapped[str] = mapped_column(String(255))
    # The field values both sides last agreed on; {"deleted": true} once the pair is gone.
    base: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    last_pushed_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("kind", "internal_id", "system", name="uq_links_internal"),
        UniqueConstraint("system", "kind", "external_id", name="uq_links_external"),
    )


OPEN_ROWS = text("status IN ('retry', 'requeued', 'started', 'dead')")
LOOSE_ROWS = text("internal_id IS NULL")


class SyncEvent(Base):
    """The sync log: one row per attempt or outcome. Rows in `retry` or `dead` are work still owed."""

    __tablename__ = "sync_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))
    internal_id: Mapped[int | None] = mapped_column(BigInteger)
    external_id: Mapped[str | None] = mapped_column(String(255))
    system: Mapped[str] = mapped_column(String(50))
    direction: Mapped[str] = mapped_column(String(10))
    operation: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_sync_events_record", "kind", "internal_id", "system"),
        Index("ix_sync_events_due", "next_attempt_at", postgresql_where=text("status = 'retry'")),
        Index("ix_sync_events_status", "status"),
        # Every write-back looks up the owed work of its records (sync/sql.py CLOSE_OPEN, PREVIOUS): small
        # partial indexes over the few open rows, by internal id and by external id (inbound events name
        # only the latter; without this each lookup walked ix_sync_events_record, 8 ms a record at 8k rows).
        Index("ix_sync_events_open_internal", "kind", "system", "internal_id", postgresql_where=OPEN_ROWS),
        Index("ix_sync_events_open_external", "kind", "system", "external_id", postgresql_where=OPEN_ROWS),
        # Retention (kit/retention.py) finds a loose row's elders (rows that name no record) through this.
        Index("ix_sync_events_loose", "kind", "system", "external_id", postgresql_where=LOOSE_ROWS),
    )
