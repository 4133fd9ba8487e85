"""One record's sync state per system, read from its links and its sync log: the `GET .../{id}/sync` view
of every kind (each kind's routes check the record exists, then answer with this)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.kit.records import Kind
from twoway.syncstate.models import Link, SyncEvent

EVENT_FIELDS = ("id", "kind", "internal_id", "external_id", "system", "direction", "operation", "status",
                "attempts", "error", "created_at")


async def of(session: AsyncSession, spec: Kind, internal_id: int) -> dict[str, Any]:
    kind = spec.name
    links = (await session.execute(select(Link).where(Link.kind == kind, Link.internal_id == internal_id))
             ).scalars().all()
    events = (await session.execute(
        select(SyncEvent).where(SyncEvent.kind == kind, SyncEvent.internal_id == internal_id)
        .order_by(SyncEvent.id.desc()).limit(50))).scalars().all()
    systems: dict[str, Any] = {}
    for link in links:
        systems[link.system] = {"external_id": link.external_id, "last_pushed_version": link.last_pushed_version,
                                "last_synced_at": link.last_synced_at, "state": "synced", "last_error": None,
                                "last_attempt_at": None}
    for event in reversed(events):
        entry = systems.setdefault(event.system, {"external_id": None, "state": "pending", "last_error": None})
        entry["last_attempt_at"] = event.created_at
        if event.status in ("retry", "dead"):
            entry["state"] = "retrying" if event.status == "retry" else "dead"
            entry["last_error"] = event.error
        elif event.status in ("ok", "conflict"):  # a recorded conflict was resolved: both sides agree
            entry["state"] = "synced"
    return {f"{kind}_id": internal_id, "systems": systems,
            "events": [{f: getattr(e, f) for f in EVENT_FIELDS} for e in events[:20]]}
