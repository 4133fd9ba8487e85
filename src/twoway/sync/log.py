"""The sync log. Open rows (`retry`, `started`) are work still owed; `dead` rows wait for a replay."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.syncstate.models import SyncEvent

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


_CLOSE_BY_ID = text("""
    UPDATE sync_events SET status = 'superseded', updated_at = now()
    WHERE kind = :kind AND system = :system AND direction = :direction AND internal_id = :iid
      AND status = ANY(:statuses)""")
_CLOSE_BY_EXTERNAL = text("""
    UPDATE sync_events SET status = 'superseded', updated_at = now()
    WHERE kind = :kind AND system = :system AND direction = :direction AND external_id = :xid
      AND status = ANY(:statuses)""")


async def close_open(session: AsyncSession, kind: str, system: str, direction: str,
                     internal_id: int | None, external_id: str | None, *, include_dead: bool,
                     keep_started: bool = False) -> None:
    """Mark owed work as superseded. A failure keeps `started` create traces; only a success clears them."""
    statuses = [s for s in OPEN if not (keep_started and s == "started")]
    if include_dead:
        statuses.append("dead")
    params = {"kind": kind, "system": system, "direction": direction, "statuses": statuses}
    if internal_id is not None:
        await session.execute(_CLOSE_BY_ID, {**params, "iid": internal_id})
    else:
        await session.execute(_CLOSE_BY_EXTERNAL, {**params, "xid": external_id})


_TRACE = text("""
    SELECT status, detail ->> 'key' AS key, created_at FROM sync_events
    WHERE kind = :kind AND system = :system AND internal_id = :iid
      AND (status = 'ok' OR (status = 'started' AND operation = 'create'))""")


@dataclass(frozen=True)
class CreateTrace:
    """What the log says about earlier creates of one record in one system."""

    had_success: bool = False
    started_keys: frozenset[str] = frozenset()
    first_started: datetime | None = None

    @property
    def exists(self) -> bool:
        return self.had_success or bool(self.started_keys)

    def only_this_key_recently(self, key: str, window: timedelta) -> bool:
        """Our only earlier create used this very key, within the idempotency window: a retry replays it."""
        recent = self.first_started is not None and datetime.now(UTC) - self.first_started < window
        return not self.had_success and self.started_keys == {key} and recent


async def create_trace(session: AsyncSession, kind: str, internal_id: int, system: str) -> CreateTrace:
    rows = (await session.execute(_TRACE, {"kind": kind, "system": system, "iid": internal_id})).all()
    started = [r for r in rows if r.status == "started"]
    return CreateTrace(had_success=any(r.status == "ok" for r in rows),
                       started_keys=frozenset(r.key or "" for r in started),
                       first_started=min((r.created_at for r in started), default=None))


_INSERT = text("""
    INSERT INTO sync_events (kind, system, direction, operation, status, internal_id, external_id, attempts,
                             error, next_attempt_at, detail)
    VALUES (:kind, :system, :direction, :operation, :status, :internal_id, :external_id, :attempts,
            :error, :next_attempt_at, CAST(:detail AS jsonb))""")


async def add(session: AsyncSession, *, kind: str, system: str, direction: str, operation: str, status: str,
              internal_id: int | None = None, external_id: str | None = None, attempts: int = 1,
              error: str | None = None, next_attempt_at: datetime | None = None,
              detail: dict[str, Any] | None = None) -> None:
    await session.execute(_INSERT, {
        "kind": kind, "system": system, "direction": direction, "operation": operation, "status": status,
        "internal_id": internal_id, "external_id": external_id, "attempts": attempts, "error": error,
        "next_attempt_at": next_attempt_at, "detail": json.dumps(detail) if detail is not None else None})


def in_seconds(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
