"""The sync log. Open rows (`retry`, `started`) are work still owed; `dead` rows wait for a replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.sync.models import SyncEvent

OPEN = ("retry", "requeued", "started")


def _scope(kind: str, system: str, direction: str, internal_id: int | None, external_id: str | None) -> list[Any]:
    where = [SyncEvent.kind == kind, SyncEvent.system == system, SyncEvent.direction == direction]
    if internal_id is not None:
        where.append(SyncEvent.internal_id == internal_id)
    else:
        where.append(SyncEvent.external_id == external_id)
    return where


async def previous_attempts(session: AsyncSession, kind: str, system: str, direction: str,
                            internal_id: int | None, external_id: str | None) -> int:
    stmt = select(func.max(SyncEvent.attempts)).where(
        *_scope(kind, system, direction, internal_id, external_id), SyncEvent.status.in_(("retry", "requeued")))
    return int((await session.execute(stmt)).scalar() or 0)


async def close_open(session: AsyncSession, kind: str, system: str, direction: str,
                     internal_id: int | None, external_id: str | None, *, include_dead: bool,
                     keep_started: bool = False) -> None:
    """Mark owed work as superseded. A failure keeps `started` create traces; only a success clears them."""
    statuses = tuple(s for s in OPEN if not (keep_started and s == "started"))
    statuses = (*statuses, "dead") if include_dead else statuses
    await session.execute(
        update(SyncEvent)
        .where(*_scope(kind, system, direction, internal_id, external_id), SyncEvent.status.in_(statuses))
        .values(status="superseded", updated_at=func.now())
    )


async def has_started_create(session: AsyncSession, kind: str, internal_id: int, system: str) -> bool:
    stmt = select(SyncEvent.id).where(
        *_scope(kind, system, "outbound", internal_id, None), SyncEvent.operation == "create",
        SyncEvent.status == "started").limit(1)
    return (await session.execute(stmt)).first() is not None


async def may_exist_externally(session: AsyncSession, kind: str, internal_id: int, system: str) -> bool:
    """A create without a recorded outcome, or any past success: the external object may exist unlinked."""
    stmt = select(SyncEvent.id).where(
        SyncEvent.kind == kind, SyncEvent.system == system, SyncEvent.internal_id == internal_id,
        (SyncEvent.status == "ok") | ((SyncEvent.status == "started") & (SyncEvent.operation == "create")),
    ).limit(1)
    return (await session.execute(stmt)).first() is not None


def add(session: AsyncSession, *, kind: str, system: str, direction: str, operation: str, status: str,
        internal_id: int | None = None, external_id: str | None = None, attempts: int = 1,
        error: str | None = None, next_attempt_at: datetime | None = None,
        detail: dict[str, Any] | None = None) -> SyncEvent:
    row = SyncEvent(kind=kind, system=system, direction=direction, operation=operation, status=status,
                    internal_id=internal_id, external_id=external_id, attempts=attempts, error=error,
                    next_attempt_at=next_attempt_at, detail=detail)
    session.add(row)
    return row


def in_seconds(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
