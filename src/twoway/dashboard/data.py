"""What the dashboard shows, read in a few bounded queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from twoway.sync import replay as replays
from twoway.sync.models import SyncEvent

CUSTOMERS = text("""
    SELECT c.id, c.name, c.email, c.version, c.deleted_at IS NOT NULL AS deleted,
           l.external_id, l.last_pushed_version, f.status AS failure, f.error
    FROM customers c
    LEFT JOIN links l ON l.kind = 'customer' AND l.system = :system AND l.internal_id = c.id
    LEFT JOIN LATERAL (
        SELECT s.status, s.error FROM sync_events s
        WHERE s.kind = 'customer' AND s.system = :system AND s.internal_id = c.id AND s.status IN ('retry', 'dead')
        ORDER BY s.id DESC LIMIT 1) f ON true
    ORDER BY c.id DESC LIMIT :limit
""")


@dataclass
class SyncState:
    external_id: str | None
    state: str
    last_error: str | None = None


@dataclass
class CustomerView:
    id: int
    name: str
    email: str
    deleted: bool
    systems: dict[str, SyncState] = field(default_factory=dict)


def sync_state(*, linked: bool, deleted: bool, version: int, last_pushed: int | None, failure: str | None) -> str:
    """One word per record and system; failures win because they need a person."""
    if failure == "dead":
        return "dead"
    if failure == "retry":
        return "retrying"
    if not linked:
        return "not synced" if deleted else "pending"
    return "pending" if version > (last_pushed or 0) else "synced"


async def customers(session: AsyncSession, systems: Sequence[str], limit: int = 50) -> list[CustomerView]:
    views: dict[int, CustomerView] = {}
    for system in systems:
        for r in await session.execute(CUSTOMERS, {"system": system, "limit": limit}):
            view = views.setdefault(r.id, CustomerView(r.id, r.name, r.email, r.deleted))
            state = sync_state(linked=r.external_id is not None, deleted=r.deleted, version=r.version,
                               last_pushed=r.last_pushed_version, failure=r.failure)
            view.systems[system] = SyncState(r.external_id, state, r.error)
    return sorted(views.values(), key=lambda v: v.id, reverse=True)


async def recent_events(session: AsyncSession, limit: int = 30) -> Sequence[SyncEvent]:
    stmt = select(SyncEvent).order_by(SyncEvent.id.desc()).limit(limit)
    return (await session.execute(stmt)).scalars().all()


async def dead_letters(session: AsyncSession, limit: int = 50) -> Sequence[SyncEvent]:
    return await replays.dead_letters(session, limit)


async def emulator_customers(api_base: str, timeout: float = 2.0) -> list[dict[str, Any]] | None:
    """The emulator's own view, for the side-by-side table; None when it cannot be read right now."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(api_base.rstrip("/") + "/_emulator/customers")
            response.raise_for_status()
            body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, list) else None


def side_by_side(ours: Sequence[CustomerView], theirs: list[dict[str, Any]], system: str) -> dict[str, Any]:
    """Our shown customers next to the emulator's, and the emulator's customers we have never seen."""
    by_id = {c.get("id"): c for c in theirs}
    pairs = []
    for view in ours:
        state = view.systems.get(system)
        other = by_id.get(state.external_id) if state and state.external_id else None
        same = other is not None and (other.get("name") or "") == view.name and (other.get("email") or "") == view.email
        pairs.append({"ours": view, "theirs": other, "match": same and not view.deleted})
    # Everything we created or adopted carries metadata.internal_id; the rest is unknown to us so far.
    unlinked = [c for c in theirs if not (c.get("metadata") or {}).get("internal_id")]
    return {"pairs": pairs, "unlinked": unlinked[:20], "unlinked_count": len(unlinked), "total": len(theirs)}
